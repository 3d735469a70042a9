"""Gates (tier-1 filters) and the seeded audit draw of filtered samples."""
from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Mapping, Sequence

from steeropt.evaluation.objectives.config import Gate, compare


def gate_reasons(metrics: Mapping[str, object], gates: Sequence[Gate]) -> list[str]:
    """Reasons of every gate that fires on one sample's metrics, in file order, without duplicates.

    A metric that is missing (None) never fires a gate: a gate needs evidence.
    """
    reasons: list[str] = []
    for g in gates:
        x = metrics.get(g.metric)
        if x is None:
            continue
        if compare(float(x), g.op, g.value) and g.reason not in reasons:
            reasons.append(g.reason)
    return reasons


def audit_draw(filtered: Sequence[int], share: float, seed: int, key: str) -> list[int]:
    """Pick the filtered sample indices to judge anyway.

    The count is share * len(filtered) rounded stochastically (so the expected audited share is exactly
    `share` even for small trials), and the draw is seeded by (seed, key) where key identifies the trial,
    so the same spec + seed + plan audits the same samples whatever else is in the batch.
    """
    if share <= 0 or not filtered:
        return []
    digest = hashlib.sha256(f"{seed}|{key}".encode()).digest()
    rng = random.Random(int.from_bytes(digest[:8], "big"))
    want = share * len(filtered)
    k = math.floor(want) + (1 if rng.random() < want - math.floor(want) else 0)
    return sorted(rng.sample(list(filtered), min(k, len(filtered))))
