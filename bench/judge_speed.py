"""Judge throughput on this machine: plain per-call scoring vs the prefix-cached batched path.

    python bench/judge_speed.py                              # local-qwen1.5b, all 40 labelled items
    python bench/judge_speed.py --judge local-qwen0.5b --n 20

Same model, same inputs (bench/judge_quality/labelled.jsonl x the yes/no rubrics), one run:
(a) plain: one sample per forward pass over its full rendered prompt (batch_size 1, no prefix cache);
(b) fast: the shared rubric prefix's KV cache once per rubric, then batch_size sample tails per pass.
The prefix pass is inside (b)'s timing. Prints samples/s of both, the ratio, the largest |P(yes)| gap
(tolerance 1e-3: float kernels differ with batch shape and sequence split) and, where the items have
labels, the Spearman correlation of the fast scores with them.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
LABEL_OF = {"concept_yn": "concept_band", "fluency_yn": "coherence_band"}
TOLERANCE = 1e-3


def main(argv: list[str] | None = None) -> dict:
    import torch
    from scipy.stats import spearmanr

    from steeropt.engine.models import load_model
    from steeropt.evaluation.judges import JudgeRequest, load_judge_spec
    from steeropt.evaluation.judges.local_backend import LocalJudge

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--judge", default="local-qwen1.5b")
    ap.add_argument("--model", help="override the spec's model ref")
    ap.add_argument("--rubrics", default="concept_yn,fluency_yn,relevance_yn")
    ap.add_argument("--n", type=int, default=40, help="labelled items to use, evenly spaced (default all 40)")
    ap.add_argument("--batch-size", type=int, help="override the spec's batch_size for the fast path")
    ap.add_argument("--threads", type=int, help="torch threads (default: torch's own)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    spec = load_judge_spec(args.judge)
    spec = spec.model_copy(update={k: v for k, v in (("model", args.model), ("batch_size", args.batch_size)) if v})
    t0 = time.perf_counter()
    lm = load_model(spec.model)
    print(f"model {lm.name} loaded in {time.perf_counter() - t0:.1f} s (cached weights: {lm.from_cache}); "
          f"torch threads {torch.get_num_threads()}")
    rows = [json.loads(x) for x in (HERE / "judge_quality" / "labelled.jsonl").read_text().splitlines() if x.strip()]
    rows = rows[::max(1, len(rows) // args.n)][:args.n]  # spread over the kinds (the file is grouped by kind)
    rubrics = [r for r in args.rubrics.split(",") if r]
    reqs = [JudgeRequest(rb, r["prompt"], r["response"], r["concept"]) for rb in rubrics for r in rows]

    plain = LocalJudge(spec.model_copy(update={"batch_size": 1}), None, lm=lm, prefix_cache=False)
    fast = LocalJudge(spec, None, lm=lm)
    plain.judge(reqs[:1])  # warm-up (first-call allocations), not timed
    timings, scores = {}, {}
    for name, judge in (("plain", plain), ("fast", fast)):
        t = time.perf_counter()
        res = judge.judge(reqs)
        timings[name] = time.perf_counter() - t
        scores[name] = [x.score for x in res]
    n = len(reqs)
    gap = max(abs(a - b) for a, b in zip(scores["plain"], scores["fast"]) if a is not None and b is not None)
    missing = sum(s is None for s in scores["fast"])
    report = {"model": lm.name, "judge": spec.name, "samples": n, "rubrics": rubrics, "batch_size": spec.batch_size,
              "threads": torch.get_num_threads(),
              "plain_samples_per_s": n / timings["plain"], "fast_samples_per_s": n / timings["fast"],
              "plain_s": timings["plain"], "fast_s": timings["fast"], "ratio": timings["plain"] / timings["fast"],
              "max_abs_p_yes_gap": gap, "within_tolerance": gap <= TOLERANCE, "missing": missing,
              "fast_forward_passes": fast.stats.forward_passes, "plain_forward_passes": plain.stats.forward_passes,
              "spearman": {}}
    for rb in rubrics:
        label = LABEL_OF.get(rb)
        if not label:
            continue
        pairs = [(s, r[label]) for s, (q, r) in zip(scores["fast"], [(q, r) for q in rubrics for r in rows])
                 if q == rb and s is not None]
        report["spearman"][rb] = float(spearmanr(*zip(*pairs)).statistic)
    print(f"{n} samples ({len(rows)} items x {', '.join(rubrics)}), batch_size {spec.batch_size}")
    print(f"(a) plain per-call : {report['plain_samples_per_s']:.2f} samples/s ({timings['plain']:.1f} s, "
          f"{plain.stats.forward_passes} forward passes)")
    print(f"(b) prefix+batched : {report['fast_samples_per_s']:.2f} samples/s ({timings['fast']:.1f} s, "
          f"{fast.stats.forward_passes} forward passes)")
    print(f"ratio {report['ratio']:.2f}x; max |P(yes) plain - fast| = {gap:.2e} "
          f"({'within' if gap <= TOLERANCE else 'OVER'} tolerance {TOLERANCE:g}); missing {missing}")
    for rb, rho in report["spearman"].items():
        print(f"Spearman {rb} vs {LABEL_OF[rb]}: {rho:.3f}")
    print(json.dumps(report))
    return report


if __name__ == "__main__":
    main()
