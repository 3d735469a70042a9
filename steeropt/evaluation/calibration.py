"""Calibrated scores: a monotone map from an axis's raw score (judge probability or metric) plus a few cheap
metrics to the human labels of that axis.

The model is a logistic curve on standardised features with NON-NEGATIVE weights (each feature is oriented
so that larger = better), fitted to label/2 with a binomial loss (scipy L-BFGS-B with bounds). Monotone by
construction, a handful of parameters, so it cannot memorise a label set. Its output is in [0, 1]
(about the expected label / 2).

A calibration file (written by `steeropt judge calibrate`) holds one fitted map per axis; an objective
names it as a score source:

    scores:
      coherency: {calibrated: bench/judge_quality/calibrated.yaml, axis: fluency}

The map reads the same raw score the objective had for that axis when it was fitted (`source`, a rubric
or a metric) and the cheap metrics it lists.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml
from scipy.optimize import minimize

from steeropt.errors import SteeroptError
from steeropt.evaluation.objectives.axes import AXES, LABEL_OF_AXIS, axis_score_names
from steeropt.specs import search_dirs

# Cheap features per axis: (metric, sign) with sign = +1 when larger means better on that axis.
CHEAP_FEATURES = {
    "concept": [("keyword_hits", 1.0)],
    "fluency": [("neutral_surprisal", -1.0), ("rep_3", -1.0), ("degenerate", -1.0)],
    "relevance": [("relevance_pmi", 1.0)],
}
RIDGE = 0.1  # L2 on the weights (standardised units): keeps a fit on ~50 items stable


@dataclass
class Calibrator:
    """One axis's fitted map. features[0] is the raw score ("score") when the objective had one."""

    axis: str
    source: dict | None  # {"rubric": name} or {"metric": name}: where the raw "score" feature comes from
    features: list[tuple[str, float]]  # (name, sign); name "score" = the raw score
    mean: list[float]
    scale: list[float]
    weights: list[float]
    bias: float

    @property
    def rubric(self) -> str | None:
        return (self.source or {}).get("rubric")

    def _z(self, rows: list[dict]) -> np.ndarray:
        """Standardised, oriented features; a missing value sits at the training mean (z = 0)."""
        z = np.zeros((len(rows), len(self.features)))
        for j, (name, sign) in enumerate(self.features):
            for i, r in enumerate(rows):
                v = r.get(name)
                if v is not None and math.isfinite(v):
                    z[i, j] = (sign * float(v) - self.mean[j]) / self.scale[j]
        return z

    def predict(self, rows: list[dict]) -> list[float | None]:
        """rows: {"score": raw score or None, metric: value, ...}. A row whose raw score is missing is None."""
        z = self._z(rows)
        p = 1.0 / (1.0 + np.exp(-(self.bias + z @ np.asarray(self.weights))))
        needs_score = bool(self.features) and self.features[0][0] == "score"
        return [None if needs_score and r.get("score") is None else float(x) for r, x in zip(rows, p)]

    def to_dict(self) -> dict:
        return {"source": self.source, "features": [[n, s] for n, s in self.features], "mean": self.mean,
                "scale": self.scale, "weights": self.weights, "bias": self.bias}


def feature_list(source: dict | None, axis: str) -> list[tuple[str, float]]:
    return ([("score", 1.0)] if source else []) + CHEAP_FEATURES[axis]


def fit(axis: str, source: dict | None, rows: list[dict], labels: list[int]) -> Calibrator:
    """Fit on rows (feature dicts) with labels in 0..2."""
    feats = feature_list(source, axis)
    mean, scale = [], []
    for name, sign in feats:
        xs = [sign * float(r[name]) for r in rows if r.get(name) is not None and math.isfinite(r[name])]
        mean.append(float(np.mean(xs)) if xs else 0.0)
        sd = float(np.std(xs)) if len(xs) > 1 else 0.0
        scale.append(sd if sd > 1e-9 else 1.0)
    cal = Calibrator(axis, source, feats, mean, scale, [0.0] * len(feats), 0.0)
    z, y = cal._z(rows), np.asarray(labels, dtype=float) / 2.0

    def loss(theta):
        b, w = theta[0], theta[1:]
        t = b + z @ w
        # binomial cross-entropy with target y in [0, 1]: log(1 + e^t) - y t, written stably
        nll = np.logaddexp(0.0, t) - y * t
        p = 1.0 / (1.0 + np.exp(-t))
        grad_t = (p - y) / len(y)
        return nll.mean() + RIDGE * (w @ w) / 2, np.concatenate([[grad_t.sum()], z.T @ grad_t + RIDGE * w])

    res = minimize(loss, np.zeros(len(feats) + 1), jac=True, method="L-BFGS-B",
                   bounds=[(None, None)] + [(0.0, None)] * len(feats))
    cal.bias, cal.weights = float(res.x[0]), [float(w) for w in res.x[1:]]
    return cal


def save(path: str | Path, calibrators: dict[str, Calibrator], meta: dict) -> None:
    data = {"kind": "steeropt-calibration", **meta, "axes": {a: c.to_dict() for a, c in calibrators.items()}}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(yaml.safe_dump(data, sort_keys=False))


def find(path: str | Path) -> Path:
    """A calibration file as given, else by that name in the objectives search path (./objectives, presets)."""
    p = Path(path)
    if p.is_file():
        return p
    for d in search_dirs("objective"):
        if (d / p).is_file():
            return d / p
    raise SteeroptError(f"calibration file '{p}' not found (also looked in the objectives folders)")


def load(path: str | Path, axis: str) -> Calibrator:
    """The fitted map of one axis from a calibration file; bad files name the file and what is wrong."""
    p = find(path)
    try:
        data = yaml.safe_load(p.read_text()) or {}
        d = data["axes"][axis]
        return Calibrator(axis, d.get("source"), [(n, float(s)) for n, s in d["features"]], [float(x) for x in d["mean"]],
                          [float(x) for x in d["scale"]], [float(x) for x in d["weights"]], float(d["bias"]))
    except KeyError as e:
        raise SteeroptError(f"{p}: no calibrated axis '{axis}' (missing key {e}); write it with `steeropt judge calibrate`") from None
    except (yaml.YAMLError, TypeError, ValueError) as e:
        raise SteeroptError(f"{p}: not a calibration file: {e}") from None


def feature_rows(spec, axis: str, score_name: str | None, recs: list[dict]) -> tuple[dict | None, list[dict]]:
    """(raw score source, one feature dict per record). The raw score is the judge's own score for every item
    (score_items(judge_all=True)), not the floor a gate gives a filtered item: the gates are cheap features."""
    src = spec.scores[score_name] if score_name else None
    source = {"rubric": src.rubric} if src is not None and src.rubric else ({"metric": src.metric} if src is not None and src.metric else None)
    rows = []
    for r in recs:
        raw = None
        if source and "rubric" in source:
            raw = (r["judge"].get(score_name) or {}).get("score")
        elif source:
            raw = r["metrics"].get(source["metric"])
        rows.append({**r["metrics"], "score": raw})
    return source, rows


def calibrate(spec, items, recs, test_items=None, test_recs=None) -> tuple[dict[str, Calibrator], dict]:
    """Fit each axis on all of (items, recs); report agreement ONLY out of fold.

    Without a test set: leave-one-concept-out (each concept predicted by a map fitted on the others).
    With one: fitted on all the calibration items, reported on the test items, plus "loco": leave-one-concept-out
    over the calibration file's own concepts (when it has 2+).
    Returns (calibrators fitted on everything, report). The training fit is never reported.
    """
    names = axis_score_names(spec)
    cals, report = {}, {"method": "held-out file" if test_items else "leave-one-concept-out", "axes": {}}
    for axis in AXES:
        lab = LABEL_OF_AXIS[axis]
        source, rows = feature_rows(spec, axis, names[axis], recs)
        keep = [i for i, it in enumerate(items) if lab in it.labels]
        if len({items[i].labels[lab] for i in keep}) < 2:
            report["axes"][axis] = {"absent": True, "reason": f"fewer than 2 distinct '{lab}' labels", "spearman": None, "ci": None, "n": len(keep)}
            continue
        X = [rows[i] for i in keep]
        y = [items[i].labels[lab] for i in keep]
        cals[axis] = fit(axis, source, X, y)
        entry: dict = {"source": source, "features": [n for n, _ in cals[axis].features]}
        if test_items is not None:
            _, trows = feature_rows(spec, axis, names[axis], test_recs)
            tk = [i for i, it in enumerate(test_items) if lab in it.labels]
            pred = cals[axis].predict([trows[i] for i in tk])
            ty = [test_items[i].labels[lab] for i in tk]
            pairs = [(p, t) for p, t in zip(pred, ty) if p is not None]
            entry.update(spearman_ci([p for p, _ in pairs], [t for _, t in pairs]))
            entry["predictions"] = {str(test_items[i].line): p for i, p in zip(tk, pred)}
        else:
            concepts = sorted({items[i].concept for i in keep})
            if len(concepts) < 2:
                raise SteeroptError(f"axis '{axis}': leave-one-concept-out needs labels of 2+ concepts, got {concepts}; "
                                    "give a held-out file with --test")
        if len({items[i].concept for i in keep}) >= 2:
            loco = _loco(axis, source, X, y, [items[i].concept for i in keep])
            loco["predictions"] = {str(items[keep[j]].line): p for j, p in loco["predictions"].items()}
            if test_items is None:
                entry.update(loco)
            else:
                entry["loco"] = loco  # the calibration file's own concepts, each predicted by a map fitted on the others
        report["axes"][axis] = entry
    return cals, report


def _loco(axis: str, source, X: list[dict], y: list[int], concepts: list[str]) -> dict:
    """Leave-one-concept-out agreement: each concept predicted by a map fitted on the others; the out-of-fold
    predictions pooled (Spearman with a bootstrap 95% interval) and per held-out concept ("folds")."""
    oof: dict[int, float | None] = {}
    folds = {}
    for c in sorted(set(concepts)):
        tr = [j for j, x in enumerate(concepts) if x != c]
        te = [j for j, x in enumerate(concepts) if x == c]
        if len({y[j] for j in tr}) < 2:
            continue  # nothing to learn from the other concepts
        m = fit(axis, source, [X[j] for j in tr], [y[j] for j in tr])
        p = m.predict([X[j] for j in te])
        oof.update(zip(te, p))
        ok = [(a, y[j]) for a, j in zip(p, te) if a is not None]
        folds[c] = spearman_ci([a for a, _ in ok], [b for _, b in ok], n_resamples=200)
    js = [j for j in sorted(oof) if oof[j] is not None]
    return {**spearman_ci([oof[j] for j in js], [y[j] for j in js]), "folds": folds,
            "predictions": {j: oof[j] for j in sorted(oof)}}


def spearman_ci(x: list[float], y: list[float], *, n_resamples: int = 1000, seed: int = 0) -> dict:
    """Spearman rho with a paired percentile bootstrap 95% interval; None where undefined (n < 3, constant)."""
    from scipy.stats import bootstrap, spearmanr

    n = len(x)
    if n < 3 or len(set(x)) < 2 or len(set(y)) < 2:
        return {"spearman": None, "ci": None, "n": n}
    rho = float(spearmanr(x, y).statistic)

    def stat(a, b):
        with warnings.catch_warnings():  # resamples with a constant side are expected on small sets
            warnings.simplefilter("ignore")
            r = spearmanr(a, b).statistic
        return 0.0 if np.isnan(r) else r  # a resample with a constant side carries no rank information

    ci = bootstrap((np.asarray(x, float), np.asarray(y, float)), stat, paired=True, vectorized=False,
                   n_resamples=n_resamples, method="percentile", random_state=np.random.default_rng(seed)).confidence_interval
    return {"spearman": rho, "ci": [float(ci.low), float(ci.high)], "n": n}
