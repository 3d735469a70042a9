"""What `pick` returns, per family and for the study, and how it is shown: the table `steeropt pick` prints and the
JSON it writes (pick.json, `--json`). Plain data, no model; report.pick fills it, deploy.pick adds the held-out run.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from steeropt.records import ReevalCandidate, jsonable

DEFAULT_CONCEPT_TARGET = 0.5  # a calibrated concept score of 0.5 ≈ label 1 of 2: the concept is clearly "partly" there


@dataclass
class Candidate:
    trial: int | None  # None: a strength read off the fitted curves (not a trial)
    params: dict
    value: float
    value_ci: tuple | None
    coherency: float
    coherency_ci: tuple | None
    dose: float | None
    n_sites: int
    alpha_sum: float
    values: dict = field(default_factory=dict)  # every per-family value (for other constraints)
    intervals: dict = field(default_factory=dict)

    @property
    def robust_for(self):
        # an unknown interval's lower bound is the worst a [0, 1] coherency can be: robust only for τ <= 0
        known = self.coherency_ci is not None and self.coherency_ci[0] is not None
        return lambda tau: (self.coherency_ci[0] if known else 0.0) >= tau

    def brief(self) -> dict:
        return {"trial": self.trial, "params": self.params, "value": self.value, "value_ci": self.value_ci,
                "coherency": self.coherency, "coherency_ci": self.coherency_ci, "dose_kl": self.dose}


@dataclass
class FamilyPick:
    family: str
    status: str  # "ok" | "no_deployable_setting"
    chosen: Candidate | None = None
    robust: bool = False  # the constraints hold at the lower bound (interval or fitted band)
    ties: list = field(default_factory=list)  # trials tied with the best (within its uncertainty)
    sweet_spot: dict = field(default_factory=dict)
    closest: list = field(default_factory=list)
    reason: str = ""
    selection_prompts: list = field(default_factory=list)
    held_out_prompts: list = field(default_factory=list)
    held_out: dict = field(default_factory=dict)  # value name -> (value, (lo, hi))
    unsteered_held_out: dict = field(default_factory=dict)
    arms_held_out: dict = field(default_factory=dict)  # "prompted" (and "prompted_steered") -> like held_out
    arm_differences: dict = field(default_factory=dict)  # arm -> value name -> paired steered − arm (runner.arms)
    held_out_texts: list = field(default_factory=list)  # per held-out prompt: the steered, unsteered, prompted texts
    next_steps: list = field(default_factory=list)  # what to try when the family has no deployable setting
    held_out_counts: dict = field(default_factory=dict)
    sites: list = field(default_factory=list)
    source: str = "trials"  # what chose the setting: "fit" | "trials", then "+reevaluation"
    curves: dict = field(default_factory=dict)  # axis -> report.dose.Curve (1-D spaces and KL dose)
    fit: dict | None = None  # report.dose.fitted_choice
    reevaluated: ReevalCandidate | None = None  # the chosen candidate's values on fresh selection prompts
    verdict: dict = field(default_factory=dict)  # beats_unsteered, meets_constraints (held-out)


@dataclass
class PickResult:
    study: str
    maximize: str
    coherency: str
    min_coherency: float
    share: float
    families: dict
    profile: Path | None = None
    constraints: list = field(default_factory=list)  # (name, op, value) a deployable setting meets
    concept_target: float = DEFAULT_CONCEPT_TARGET
    x_label: str = ""
    files: list = field(default_factory=list)

    def table_rows(self) -> list[dict]:
        rows = []
        for f, p in self.families.items():
            c = p.chosen
            row = {"family": f, "status": p.status, "trial": c.trial if c else None,
                   "setting": fmt_params(c.params) if c else "—", "robust": p.robust if c else None,
                   "selection": f"{c.value:.2f} / coh {c.coherency:.2f}" if c else "—",
                   "held_out": "—", "unsteered": "—", "prompted": "—", "sweet_spot": fmt_spot(p.sweet_spot),
                   "source": p.source}
            if p.held_out:
                v, vc = p.held_out[self.maximize], p.held_out[self.coherency]
                row["held_out"] = f"{fmt_ci(*v)} / coh {fmt_ci(*vc)}"
            if p.unsteered_held_out:
                v, vc = p.unsteered_held_out[self.maximize], p.unsteered_held_out[self.coherency]
                row["unsteered"] = f"{fmt_ci(*v)} / coh {fmt_ci(*vc)}"
            if "prompted" in p.arms_held_out:
                v, vc = p.arms_held_out["prompted"][self.maximize], p.arms_held_out["prompted"][self.coherency]
                row["prompted"] = f"{fmt_ci(*v)} / coh {fmt_ci(*vc)}"
            if p.status != "ok":
                row["setting"] = ("no deployable setting" + (f" (best: {fmt_params(c.params)})" if c else "")
                                  + ": " + p.reason)
            rows.append(row)
        return rows

    def to_dict(self) -> dict:
        """Plain JSON-able result (`steeropt pick --json`): per family status, setting, sweet spot, held-out and
        unsteered values with intervals."""
        fams = {}
        for f, p in self.families.items():
            c = p.chosen
            fams[f] = {"status": p.status, "reason": p.reason or None, "source": p.source,
                       "setting": None if c is None else {"params": c.params, "trial": c.trial, "sites": p.sites},
                       "selection": None if c is None else {
                           self.maximize: _vci(c.value, c.value_ci), self.coherency: _vci(c.coherency, c.coherency_ci),
                           **{n: _vci(c.values.get(n), c.intervals.get(n)) for n, _, _ in self.constraints
                              if n not in (self.maximize, self.coherency)}},
                       "robust": p.robust, "sweet_spot": jsonable(p.sweet_spot), "fit": jsonable(p.fit),
                       "curves": {a: cv.summary() for a, cv in p.curves.items()},
                       "reevaluated": reevaluated_dict(p.reevaluated),
                       "held_out": {k: _vci(*v) for k, v in p.held_out.items() if k in self.shown()},
                       "unsteered_held_out": {k: _vci(*v) for k, v in p.unsteered_held_out.items() if k in self.shown()},
                       **{f"{arm}_held_out": {k: _vci(*v) for k, v in vals.items() if k in self.shown()}
                          for arm, vals in p.arms_held_out.items()},
                       "versus": jsonable(p.arm_differences), "held_out_texts": p.held_out_texts,
                       "next_steps": p.next_steps,
                       "held_out_counts": jsonable(p.held_out_counts), "verdict": jsonable(p.verdict),
                       "selection_prompts": p.selection_prompts, "held_out_prompts": p.held_out_prompts,
                       "closest": jsonable(p.closest)}
        return {"study": self.study, "maximize": self.maximize, "coherency": self.coherency,
                "min_coherency": self.min_coherency, "constraints": [list(c) for c in self.constraints],
                "concept_target": self.concept_target, "x": self.x_label, "families": fams,
                "profile": str(self.profile) if self.profile else None, "files": [str(f) for f in self.files]}

    def shown(self) -> set:
        return {self.maximize, self.coherency, "hm", "kl", *(n for n, _, _ in self.constraints)}


def _vci(v, ci) -> dict:
    return {"value": v, "ci": list(ci) if ci else None}


def reevaluated_dict(r: ReevalCandidate | None) -> dict | None:
    """A re-evaluated candidate as pick.json and the profile show it."""
    return None if r is None else jsonable(r.to_dict())


def fmt_ci(v, ci) -> str:
    if v is None:
        return "n/a"
    return f"{v:.2f}" + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci and ci[0] is not None else "")


def fmt_params(p: dict) -> str:
    return ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in p.items())


def fmt_spot(s: dict) -> str:
    if not s:
        return "—"
    if "interval" in s:  # fitted (report.dose.sweet_spot)
        if s.get("interval") is None:
            return f"empty (p_empty {s.get('p_empty', 1):.2f})"
        (a, b), ci = s["interval"], s.get("interval_ci")
        txt = f"[{a:.3g}, {b:.3g}] width {s['width']:.3g}"
        if ci:
            txt += f" (ends {ci[0][0]:.3g}–{ci[0][1]:.3g} / {ci[1][0]:.3g}–{ci[1][1]:.3g}; p_empty {s['p_empty']:.2f})"
        return txt
    if not s.get("ranges"):
        return "—"
    return "; ".join(f"{k} [{r[0]:.3g}, {r[1]:.3g}]" for k, r in s["ranges"].items()) + f" ({s['n']} trials)"
