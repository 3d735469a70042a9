"""A study's trials as a table: one row per trial of an Optuna study written by the runner (no model).

    >>> df = trials_frame(optuna.load_study(study_name="quickstart", storage="sqlite:///steeropt.db"),  # doctest: +SKIP
    ...                   [("concept", "maximize"), ("coherency", "maximize")])
"""
from __future__ import annotations

import pandas as pd

from steeropt.records import TrialRecord
from steeropt.search.optimizers.base import failed_reason


def trials_frame(optuna_study, objectives) -> pd.DataFrame:
    """params, raw α, values, intervals, counts, feasibility and failure reason, one row per trial."""
    rows = []
    for t in optuna_study.get_trials(deepcopy=False):
        rec = TrialRecord.from_trial(t)
        row = {"number": t.number, "state": t.state.name, **{f"params.{k}": v for k, v in t.params.items()}}
        row |= {f"raw.{k}": v for k, v in rec.raw_alphas.items()}
        row |= {f"alpha.{k}": v for k, v in (rec.alphas or {}).items()}
        vals = rec.values or {}
        for name, _ in objectives:
            row[name] = vals.get(name)
            iv = (rec.intervals or {}).get(name)
            row[f"{name}.ci_low"], row[f"{name}.ci_high"] = (iv or (None, None))[:2]
        row |= {f"value.{k}": v for k, v in vals.items() if k not in dict(objectives)}
        row |= {f"count.{k}": v for k, v in (rec.counts or {}).items() if not isinstance(v, dict)}
        row["feasible"] = rec.feasible
        row["failed_reason"] = failed_reason(t)
        rows.append(row)
    return pd.DataFrame(rows)
