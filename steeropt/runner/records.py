"""What a trial stores about its samples, shared by the study loop, its arms and the re-evaluation."""
from __future__ import annotations

from steeropt.evaluation.objectives.stack import TrialResult, sample_value
from steeropt.records import FamilyValues, TrialRecord


def prompt_scores(records: list[dict], prompts: list[tuple[str, str]], values=()) -> dict:
    """Per-sample values of one trial (every score, the objectives and constraints, hm and the KL dose), aligned
    with the study's trial prompts by index: what a paired comparison resamples (report.paired) and power
    estimates read (report.power)."""
    index = {fp: i for i, fp in enumerate(prompts)}
    out = {"prompt": [index.get((r["family"], r["prompt"])) for r in records], "family": [r["family"] for r in records]}
    names = list(dict.fromkeys([*(k for r in records for k in r["scores"]), *values, "hm", "kl"]))
    for k in names:
        out[k] = [sample_value(r, k) for r in records]
    return out


def told_record(rec: TrialRecord, res: TrialResult, prompts: list[tuple[str, str]], names) -> TrialRecord:
    """`rec` (raw α) completed with a told trial's values, intervals, counts, per-family values, feasibility and
    per-prompt scores; `names`: the objectives and constraints."""
    rec.values, rec.intervals, rec.counts, rec.feasible = res.values, res.intervals, res.counts, res.feasible
    rec.families = {f: FamilyValues(d.get("values"), d.get("intervals"), (d.get("counts") or {}).get("samples"))
                    for f, d in res.families.items()}
    rec.prompt_scores = prompt_scores(res.samples, prompts, names)
    return rec
