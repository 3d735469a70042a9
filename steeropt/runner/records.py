"""What a trial stores about its samples, shared by the study loop, its arms and the re-evaluation."""
from __future__ import annotations

import json

from steeropt.evaluation.objectives.stack import sample_value


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


def jsonable(x):
    """x as plain JSON (NaN -> None, unknown objects -> str): what Optuna user attributes and files can hold."""
    return json.loads(json.dumps(x, default=lambda o: None if o != o else str(o)))
