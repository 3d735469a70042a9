"""Label noise ceiling: agreement between the stored labels and a blind second pass over the same items.

`labels/relabel_blind_input.jsonl` holds 60 items drawn at random (seed 0) from every label file, without
labels; a reader who never saw the stored labels writes `labels/relabel_blind.jsonl` (the same lines plus
"labels": {concept, coherency, relevance}). Per axis: quadratic-weighted Cohen's kappa and Spearman between
the two passes, each with a paired bootstrap 95% interval. No scorer can be expected to agree with the labels
much better than the labels agree with themselves.

    .venv/bin/python bench/judge_quality/relabel.py              # report
    .venv/bin/python bench/judge_quality/relabel.py --draw       # (re)write the blind input file
"""
from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

HERE = Path(__file__).resolve().parent
LABELS = HERE / "labels"
FILES = ("calibration.jsonl", "test.jsonl", "qwen.jsonl")
AXES = ("concept", "coherency", "relevance")
N_DRAW, SEED = 60, 0


def read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def stored() -> dict[tuple[str, int], dict]:
    """(file, id) -> stored labelled item, over every label file."""
    return {(f, d["id"]): d for f in FILES if (LABELS / f).is_file() for d in read(LABELS / f)}


def draw(n: int = N_DRAW, seed: int = SEED) -> list[dict]:
    items = [({"file": f, **d}) for (f, _), d in sorted(stored().items())]
    keys = ("file", "id", "prompt", "response", "concept", "concept_description")
    return [{k: d[k] for k in keys} for d in random.Random(seed).sample(items, n)]


def weighted_kappa(a, b, k: int = 3) -> float:
    """Cohen's kappa with quadratic weights for ratings 0..k-1 (1 = perfect, 0 = chance)."""
    a, b = np.asarray(a, int), np.asarray(b, int)
    obs = np.zeros((k, k))
    np.add.at(obs, (a, b), 1.0)
    exp = np.outer(obs.sum(1), obs.sum(0)) / obs.sum()
    w = (np.arange(k)[:, None] - np.arange(k)[None, :]) ** 2 / (k - 1) ** 2
    den = (w * exp).sum()
    return float("nan") if den == 0 else float(1.0 - (w * obs).sum() / den)


def spearman(a, b) -> float:
    if len(set(a)) < 2 or len(set(b)) < 2:
        return float("nan")
    return float(spearmanr(a, b).statistic)


def boot(stat, a, b, n: int = 2000, seed: int = 0) -> list[float]:
    """Paired percentile bootstrap 95% interval (resamples where the statistic is undefined are skipped)."""
    rng, a, b = np.random.default_rng(seed), np.asarray(a), np.asarray(b)
    vals = []
    for _ in range(n):
        i = rng.integers(0, len(a), len(a))
        v = stat(a[i], b[i])
        if np.isfinite(v):
            vals.append(v)
    return [float(np.percentile(vals, 2.5)), float(np.percentile(vals, 97.5))]


def key(d: dict) -> tuple[str, int]:
    return d["file"], d["id"]


def report(second: list[dict]) -> dict:
    """Per axis: the stored labels against the second pass, matched by (file, id); a changed response fails."""
    first = stored()
    stale = [key(d) for d in second if key(d) in first and first[key(d)]["response"] != d["response"]]
    if stale:
        raise SystemExit(f"{len(stale)} relabelled items no longer match the stored text, e.g. {stale[0]}")
    out = {"n": len(second), "matched": sum(key(d) in first for d in second)}
    for axis in AXES:
        pairs = [(first[key(d)]["labels"][axis], d["labels"][axis]) for d in second
                 if key(d) in first and d.get("labels", {}).get(axis) is not None
                 and first[key(d)]["labels"].get(axis) is not None]
        a, b = [p for p, _ in pairs], [q for _, q in pairs]
        out[axis] = {"n": len(pairs), "kappa_w": weighted_kappa(a, b), "kappa_ci": boot(weighted_kappa, a, b),
                     "spearman": spearman(a, b), "spearman_ci": boot(spearman, a, b),
                     "exact": float(np.mean(np.asarray(a) == np.asarray(b)))}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--draw", action="store_true", help="write labels/relabel_blind_input.jsonl")
    ap.add_argument("second", nargs="?", default=str(LABELS / "relabel_blind.jsonl"))
    args = ap.parse_args()
    if args.draw:
        if (LABELS / "relabel_blind_input.jsonl").exists():
            raise SystemExit("relabel_blind_input.jsonl exists (a relabel pass may depend on it); move it away first")
        rows = draw()
        (LABELS / "relabel_blind_input.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        print(f"wrote {len(rows)} items to {LABELS / 'relabel_blind_input.jsonl'}")
        return
    rep = report(read(Path(args.second)))
    print(f"{rep['n']} items relabelled blind")
    for axis in AXES:
        e = rep[axis]
        print(f"  {axis:10s} weighted kappa {e['kappa_w']:.2f} [{e['kappa_ci'][0]:.2f}, {e['kappa_ci'][1]:.2f}]  "
              f"spearman {e['spearman']:.2f} [{e['spearman_ci'][0]:.2f}, {e['spearman_ci'][1]:.2f}]  "
              f"exact {e['exact']:.2f}  n={e['n']}")
    print(json.dumps(rep))


if __name__ == "__main__":
    main()
