"""Leave-one-concept-out (LOCO) choice and validation of gate thresholds.

A gate fires on broken text (coherency label 0). Its threshold is chosen per held-out concept on the
OTHER concepts only (the most recall at precision >= 0.9, validation.choose_threshold) and applied to the
held-out one; the held-out concept's items never influence its own threshold. The gate qualifies for
shipping only if that held-out precision is >= 0.9 on every concept (a fold whose other concepts admit no
threshold, or whose threshold fires wrongly on the held-out concept, disqualifies it). The shipped
threshold is the same rule applied to every concept.

    res = loco_gate("rep_3", ">", [m.get("rep_3") for m in metrics], items)
    res["qualifies"], res["threshold"], res["folds"]["ocean"]["precision"], res["pooled"]["recall"]
"""
from __future__ import annotations

from collections.abc import Sequence

from steeropt.evaluation.objectives.config import compare
from steeropt.evaluation.validation import LabelItem, choose_threshold

MIN_PRECISION = 0.9


def confusion(fired: Sequence[bool], broken: Sequence[bool]) -> dict:
    """Precision/recall of `fired` for `broken` (None where undefined), with the counts."""
    tp = sum(f and b for f, b in zip(fired, broken))
    fp = sum(f and not b for f, b in zip(fired, broken))
    fn = sum(b and not f for f, b in zip(fired, broken))
    return {"precision": tp / (tp + fp) if tp + fp else None, "recall": tp / (tp + fn) if tp + fn else None,
            "fired": tp + fp, "broken": tp + fn, "n": len(fired)}


def _fires(v, op: str, t: float | None) -> bool:
    return t is not None and v is not None and compare(float(v), op, t)


def loco_gate(metric: str, op: str, values: Sequence[float | None], items: Sequence[LabelItem],
              min_precision: float = MIN_PRECISION, choose_at: float | None = None) -> dict:
    """LOCO threshold choice for one gate `metric op threshold` over the items' concepts.

    choose_at: the precision the threshold must reach on the concepts it is chosen on (default min_precision);
    a stricter target leaves a margin for the unseen concept. The shipping bar stays min_precision.

    values: the metric per item (None = missing, never fires). Items without a coherency label are left out.
    Returns {"metric", "op", "threshold" (chosen on all concepts, None if none qualifies on them),
    "qualifies", "folds": {concept: {"threshold", "precision", "recall", "fired", "broken", "n"}},
    "pooled": the same figures over every held-out decision}.
    """
    target = min_precision if choose_at is None else choose_at
    keep = [i for i, it in enumerate(items) if "coherency" in it.labels]
    vals = [values[i] for i in keep]
    broken = [items[i].labels["coherency"] == 0 for i in keep]
    concepts = [items[i].concept for i in keep]
    folds, fired_all = {}, [False] * len(keep)
    for c in sorted(set(concepts)):
        tr = [j for j, x in enumerate(concepts) if x != c]
        te = [j for j, x in enumerate(concepts) if x == c]
        t = choose_threshold([vals[j] for j in tr], [broken[j] for j in tr], op, target)
        fired = [_fires(vals[j], op, t) for j in te]
        for j, f in zip(te, fired):
            fired_all[j] = f
        folds[c] = {"threshold": t, **confusion(fired, [broken[j] for j in te])}
    qualifies = bool(folds) and all(f["threshold"] is not None and (f["precision"] is None or f["precision"] >= min_precision)
                                    for f in folds.values())
    return {"metric": metric, "op": op, "choose_at": target, "threshold": choose_threshold(vals, broken, op, target),
            "qualifies": qualifies, "folds": folds, "pooled": confusion(fired_all, broken)}
