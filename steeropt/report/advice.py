"""What to try next when a family has no deployable setting, from the study's own evidence: which condition
emptied the sweet spot, and the options it points to (a wider range, another layer, keywords the steered texts
use but the concept lacks, a lower τ with what it costs, more prompts per trial).

Plain data in, sentences out: `family_advice` reads one family's fitted curves and sweet spot (report.dose) and
`missing_keywords` the study's sample files; `steeropt pick` prints the result.
"""
from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import numpy as np

from steeropt.evaluation.objectives.metrics import compile_keywords
from steeropt.tracking.run_dir import baseline_file, samples_file

WORD = re.compile(r"[a-z][a-z'-]{3,}")
# everyday words that rise with any steering or say nothing about a concept
STOP = set("""about after again also always because been before being between both could does doing during each
every from have having here into itself just like make many more most much must never only other over same
should some such than that their them then there these they this those through under until very were what when
where which while will with within without would your yours yourself really things thing something someone
often life time world people first great good well even make made also""".split())


def family_advice(curves: dict, spot: dict, *, concept: str, target: float, floors: dict[str, float],
                  searched: tuple[float, float] | None, study_ref: str, prompts_per_trial: int | None) -> list[str]:
    """Sentences for one family without a deployable setting, each naming its evidence."""
    out = []
    c = curves.get(concept)
    if c is None:
        return [f"too few trials with a {concept} value to fit a curve: run more trials (`steeropt run {study_ref}`)"]
    if spot.get("reason"):
        out.append(f"what emptied the sweet spot: {spot['reason']}")
    top, rising = float(c.y.max()), bool(c.y[-1] >= c.y.max() - 0.02 and c.y[-1] - c.y[0] > 0.05)
    if top < target and searched and rising and c.x[-1] >= searched[1] - 1e-9 * max(1.0, abs(searched[1])):
        out.append(f"a wider range: the fitted {concept} still rises at the top of the searched range "
                   f"[{searched[0]:g}, {searched[1]:g}] (max {top:.2f} < {target:g}); raise the high end in the "
                   "search space")
    ok = c.y >= target
    short = {}  # floor axis -> (best fitted value where the concept meets its target, at which α, τ)
    for axis, tau in floors.items():
        if axis in curves and ok.any() and float(curves[axis].y[ok].max()) < tau:
            y = curves[axis].y[ok]
            short[axis] = (float(y.max()), float(c.x[ok][int(np.argmax(y))]), tau)
    if short:
        both = " and ".join(f"{a} ≥ {b:.2f} instead of {t:g}" for a, (b, _, t) in short.items())
        where = max(x for _, x, _ in short.values())
        how = ", ".join(f"--min-coherency {b:.2f}" if a == "coherency" else f"{a} in the objective's constraints"
                        for a, (b, _, _) in short.items())
        out.append(f"a lower τ: {both}{' (all of them)' if len(short) > 1 else ''} would open a sweet spot near "
                   f"α {where:.3g}; the cost: answers at "
                   + ", ".join(f"{a} {b:.2f}" for a, (b, _, _) in short.items())
                   + f", below what the study asked for ({how})")
    p_empty = spot.get("p_empty")
    if p_empty is not None and 0.05 < p_empty < 0.95:
        per = f" ({prompts_per_trial} per trial now)" if prompts_per_trial else ""
        out.append(f"more prompts per trial{per}: the verdict is uncertain (P(empty) {p_empty:.2f}); "
                   f"`steeropt plan {study_ref}` says what a budget can tell apart")
    return out


def study_advice(*, concept_name: str, layer: int | None, keywords_missing: list[str]) -> list[str]:
    """Sentences that hold for every family of the study: another layer, and the keywords it lacks."""
    out = []
    if layer is not None:
        out.append(f"another layer: `steeropt sweep --concept {concept_name} --layer L` for layers around {layer} "
                   f"shows where the concept starts and the text breaks at each; `steeropt new study NAME --concept "
                   f"{concept_name} --from-sweep` compares several and proposes one")
    if keywords_missing:
        out.append("keywords the steered texts use but the concept lacks (the cheap concept score misses them): "
                   + ", ".join(keywords_missing) + "; add the ones that mean the concept to its keywords")
    return out


def missing_keywords(runs_dir: Path, keywords: list[str], *, alpha_param: str | None, trials, top: int = 8) -> list[str]:
    """Words far more frequent in the study's most strongly steered samples (the top third of α among complete
    trials) than in its unsteered answers, that no concept keyword matches. [] without sample files."""
    base_file = baseline_file(Path(runs_dir))
    if not alpha_param or not base_file.exists():
        return []
    done = [t for t in trials if t.state.name == "COMPLETE" and isinstance(t.params.get(alpha_param), (int, float))]
    if len(done) < 3:
        return []
    cut = float(np.quantile([t.params[alpha_param] for t in done], 2 / 3))
    steered: Counter = Counter()
    for t in done:
        f = samples_file(Path(runs_dir), t.number)
        if t.params[alpha_param] >= cut and f.exists():
            for line in f.read_text(encoding="utf-8").splitlines():
                if line.strip():
                    steered.update(set(WORD.findall(json.loads(line).get("text", "").lower())))
    base: Counter = Counter()
    for line in base_file.read_text(encoding="utf-8").splitlines():
        if line.strip():
            base.update(set(WORD.findall(json.loads(line).get("text", "").lower())))
    pats = compile_keywords(keywords)
    scored = [(n / (1 + base[w]), w) for w, n in steered.items()
              if n >= 3 and w not in STOP and n >= 3 * (1 + base[w]) and not any(p.search(w) for p in pats)]
    return [w for _, w in sorted(scored, reverse=True)[:top]]
