"""Which samples to label next (`steeropt review`): those whose labels teach the most about the scores a study
relies on. Three reasons, each a number in [0, 1]:

- front: the sample's trial is on the Pareto front or close behind it (1 / (1 + non-dominated rank));
- pick: its trial's α is near the setting chosen for the sample's family (a profile's, else what `steeropt pick`
  chooses from the stored trials), where a wrong score would move the deployed α;
- doubt: a judge and the cheap tier disagree on an axis (|judge score − cheap proxy|); with no judge (the
  quickstart's calibrated cheap tier), a score near a constraint's threshold, where one label decides whether
  the setting counts as feasible.

Priority is their sum. Picks are spread over families and trials (at most `per_trial` from one trial), and the
same (prompt, text) is never asked twice: α near 0 gives the unsteered text in many trials.

    items = select(spec, trials, runs_dir, n=30, chosen=chosen_params(spec))
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from steeropt.errors import SteeroptError
from steeropt.evaluation.objectives.axes import axis_score_names
from steeropt.records import ReevalRecord, TrialRecord
from steeropt.report.pareto import non_dominated
from steeropt.report.pick import default_selection
from steeropt.tracking.run_dir import samples_file

# axis -> the cheap proxy in [0, 1] a judge's score on that axis is compared with
CHEAP_PROXY = {"concept": "keyword_hit", "fluency": "fluency_proxy", "relevance": "relevance_proxy"}


@dataclass
class ReviewItem:
    trial: int
    index: int  # the sample's index in its trial's samples file
    family: str
    prompt: str
    text: str
    priority: float
    reasons: list[str] = field(default_factory=list)
    record: dict = field(default_factory=dict, repr=False)  # the sample's record in the samples file


def front_ranks(trials, objectives) -> dict[int, int]:
    """trial number -> non-dominated rank among the complete trials (0 = the front); infeasible trials rank
    after every feasible one."""
    names, dirs = [n for n, _ in objectives], [d for _, d in objectives]
    recs = {t.number: TrialRecord.from_trial(t) for t in trials}
    pts = {t.number: [(recs[t.number].values or {}).get(n) for n in names] for t in trials
           if t.state.name == "COMPLETE"}
    pts = {k: v for k, v in pts.items() if all(x is not None for x in v)}
    feas = {t.number: (recs[t.number].feasible is not False) for t in trials}
    ranks, rank = {}, 0
    for group in ([k for k in pts if feas.get(k)], [k for k in pts if not feas.get(k)]):
        left = list(group)
        while left and rank < 10_000:
            front = [left[i] for i in non_dominated([pts[k] for k in left], dirs)]
            ranks.update({k: rank for k in front})
            left = [k for k in left if k not in front]
            rank += 1
    return ranks


def chosen_params(spec, profile: str | Path | None = None) -> dict[str, dict]:
    """family -> the params of the chosen setting: from a profile (`steeropt pick --out`; default
    profiles/<study> when it exists), else what pick chooses from the stored trials (no model is loaded).
    Families without a deployable setting are left out; {} when nothing can be chosen yet."""
    path = Path(profile) if profile else Path("profiles") / spec.name
    f = path / "profile.yaml" if path.is_dir() else path
    if f.is_file():
        data = yaml.safe_load(f.read_text()) or {}
        return {fam: d["params"] for fam, d in (data.get("families") or {}).items()
                if d.get("status") == "ok" and d.get("params")}
    if profile:
        raise SteeroptError(f"no steering profile at {profile} (expected profile.yaml from `steeropt pick --out`)")

    import optuna  # heavy optional dependency (imported when the study is read)

    try:
        st = optuna.load_study(study_name=spec.name, storage=spec.storage)
    except KeyError:
        return {}
    trials = [t for t in st.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
    if not trials:
        return {}
    res = default_selection(spec, trials, ReevalRecord.stored(st, len(trials)))
    return {fam: p.chosen.params for fam, p in res.families.items() if p.status == "ok" and p.chosen is not None}


def _closeness(params: dict, target: dict, span: dict[str, float]) -> float:
    """1 at the chosen α, falling off with the normalised distance (0.5 at a tenth of the explored range)."""
    keys = [k for k in target if k in params and isinstance(params[k], (int, float)) and isinstance(target[k], (int, float))]
    if not keys:
        return 0.0
    d = math.sqrt(sum(((params[k] - target[k]) / (span.get(k) or 1.0)) ** 2 for k in keys) / len(keys))
    return 0.5 ** (d / 0.1)


def _doubt(rec: dict, axis_names: dict[str, str | None], thresholds: dict[str, float]) -> tuple[float, str | None]:
    best, why = 0.0, None
    for axis, name in axis_names.items():
        if name is None:
            continue
        judged = ((rec.get("judge") or {}).get(name) or {}).get("score")
        cheap = (rec.get("metrics") or {}).get(CHEAP_PROXY[axis])
        if judged is not None and cheap is not None and abs(judged - cheap) > best:
            best, why = abs(judged - cheap), f"judge {judged:.2f} vs cheap {CHEAP_PROXY[axis]} {cheap:.2f} on {axis}"
    if why is None and not rec.get("filtered"):  # no judge to disagree with: how close a label is to deciding
        for name, tau in thresholds.items():
            v = (rec.get("scores") or {}).get(name)
            if v is not None and 1 - min(1.0, abs(v - tau) / 0.25) > best:
                best, why = 1 - min(1.0, abs(v - tau) / 0.25), f"{name} {v:.2f} near its threshold {tau:g}"
    return best, why


def select(spec, trials, runs_dir: Path, n: int = 30, chosen: dict[str, dict] | None = None,
           per_trial: int | None = None) -> list[ReviewItem]:
    """The n samples to label next, most useful first (see the module docstring). `trials`: the study's Optuna
    FrozenTrials; samples are read from runs_dir (the runner's samples files)."""
    objective = spec.part("objective")
    ranks = front_ranks(trials, objective.directions)
    names = axis_score_names(objective)
    thresholds = {c.name: float(c.value) for c in objective.constraints if c.name in objective.scores}
    chosen = chosen or {}
    done = [t for t in trials if t.state.name == "COMPLETE"]
    span = {}
    for k in {k for p in chosen.values() for k in p}:
        vals = [t.params[k] for t in done if isinstance(t.params.get(k), (int, float))]
        span[k] = (max(vals) - min(vals)) if len(vals) > 1 else 1.0
    items = []
    for t in trials:
        if not t.state.is_finished():
            continue
        path = samples_file(runs_dir, t.number)
        if not path.exists():
            continue
        for line in path.read_text().splitlines():
            if not line.strip():
                continue
            rec = json.loads(line)
            reasons, score = [], 0.0
            if t.number in ranks:
                front = 1.0 / (1 + ranks[t.number])
                score += front
                reasons.append("on the front" if ranks[t.number] == 0 else f"front rank {ranks[t.number]}")
            target = chosen.get(rec.get("family"))
            if target:
                near = _closeness(t.params, target, span)
                score += near
                if near >= 0.25:
                    reasons.append(f"near the chosen α for {rec.get('family')} ({near:.2f})")
            doubt, why = _doubt(rec, names, thresholds)
            score += doubt
            if why:
                reasons.append(why)
            items.append(ReviewItem(t.number, int(rec.get("index", 0)), str(rec.get("family")), rec["prompt"],
                                    rec["text"], score, reasons, rec))
    items.sort(key=lambda x: (-x.priority, x.trial, x.index))
    cap = per_trial or max(2, math.ceil(n / 6))
    out, seen, per = [], set(), {}
    fams = sorted({x.family for x in items})
    queues = {f: [x for x in items if x.family == f] for f in fams}
    while len(out) < n and any(queues.values()):
        for f in fams:  # round-robin over families, best first within each
            while queues[f] and len(out) < n:
                x = queues[f].pop(0)
                if (x.prompt, x.text) in seen or per.get(x.trial, 0) >= cap:
                    continue
                seen.add((x.prompt, x.text))
                per[x.trial] = per.get(x.trial, 0) + 1
                out.append(x)
                break
    for x in items:  # too few trials for the cap: fill up with the best of the rest
        if len(out) < n and (x.prompt, x.text) not in seen:
            seen.add((x.prompt, x.text))
            out.append(x)
    return out
