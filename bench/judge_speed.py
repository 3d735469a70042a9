"""Judge throughput on this machine: plain per-call scoring vs the prefix-cached batched path.

    python bench/judge_speed.py                              # local-qwen1.5b, all 40 labelled items
    python bench/judge_speed.py --judge local-qwen0.5b --n 20

    python bench/judge_speed.py --trials runs/quickstart --study studies/quickstart.yaml --n 24
                                                             # a study's own batch: one concept, each prompt per trial

Same model, same inputs (bench/judge_quality/labelled.jsonl, or a run folder's trial samples, x the yes/no
rubrics), one run:
(a) plain: one request per forward pass over its full rendered prompt (batch_size 1, no prefix cache);
(b) fast: the shared rubric prefix's KV cache once per rubric, extended once per group of requests that share
    the text up to the response (concept, prompt), then batch_size tails per pass;
(c) with --trials: fast with the rubric prefix alone (the path before the per-group extension).
Prefix passes are inside the timings. A sample is one answer judged on every rubric: samples/s = answers/s,
requests/s = answers x rubrics / s. Prints both per arm, the ratios, the largest |P(yes)| gap against (a)
(tolerance 1e-3: float kernels differ with batch shape and sequence split) and, where the items have labels,
the Spearman correlation of the fast scores with them.
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
    ap.add_argument("--trials", help="judge this run folder's trial samples (trial-*.jsonl) instead of the labelled items")
    ap.add_argument("--study", help="with --trials: the study spec whose concept the judge is told")
    ap.add_argument("--plain-n", type=int, help="plain arm on the first N samples only (it is ~3x slower; the P(yes) "
                    "gap is checked on those)")
    ap.add_argument("--compare-prefix", action="store_true",
                    help="also time the fast path with the rubric prefix alone (before the per-group extension)")
    ap.add_argument("--packed", action="store_true",
                    help="judge on the generation fast path's packed weights (a study's judge shares that copy)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    spec = load_judge_spec(args.judge)
    spec = spec.model_copy(update={k: v for k, v in (("model", args.model), ("batch_size", args.batch_size)) if v})
    t0 = time.perf_counter()
    lm = load_model(spec.model)
    if args.packed:
        from steeropt.engine import fastpath

        fastpath.prepare(lm)
    print(f"model {lm.name} loaded in {time.perf_counter() - t0:.1f} s (cached weights: {lm.from_cache}); "
          f"torch threads {torch.get_num_threads()}")
    if args.trials:
        rows = study_rows(Path(args.trials), args.study, args.n)
    else:
        rows = [json.loads(x) for x in (HERE / "judge_quality" / "labelled.jsonl").read_text().splitlines() if x.strip()]
        rows = rows[::max(1, len(rows) // args.n)][:args.n]  # spread over the kinds (the file is grouped by kind)
    rubrics = [r for r in args.rubrics.split(",") if r]
    reqs = [JudgeRequest(rb, r["prompt"], r["response"], r["concept"]) for rb in rubrics for r in rows]

    arms = {"plain": LocalJudge(spec.model_copy(update={"batch_size": 1}), None, lm=lm, prefix_cache=False),
            "fast": LocalJudge(spec, None, lm=lm)}
    if args.compare_prefix:
        arms["prefix_only"] = LocalJudge(spec, None, lm=lm)
        arms["prefix_only"]._head = lambda rubric, req, j=arms["prefix_only"]: j._shared_prefix(rubric)
    arms["plain"].judge(reqs[:1])  # warm-up (first-call allocations), not timed
    n_of = {name: len(rows) for name in arms}
    n_of["plain"] = min(len(rows), args.plain_n or len(rows))
    plain_ids = {i for i, r in enumerate(reqs) if i % len(rows) < n_of["plain"]}  # reqs are rubric-major
    timings, scores = {}, {}
    for name, judge in arms.items():
        todo = [r for i, r in enumerate(reqs) if name != "plain" or i in plain_ids]
        t = time.perf_counter()
        res = judge.judge(todo)
        timings[name] = time.perf_counter() - t
        scores[name] = [x.score for x in res]
    fast_on_plain = {arm: [x for i, x in enumerate(scores[arm]) if i in plain_ids] for arm in arms if arm != "plain"}
    n = len(rows)
    gap = max(abs(a - b) for arm in fast_on_plain
              for a, b in zip(scores["plain"], fast_on_plain[arm]) if a is not None and b is not None)
    missing = sum(s is None for s in scores["fast"])
    report = {"model": lm.name, "judge": spec.name, "samples": n, "requests": len(reqs), "rubrics": rubrics,
              "items": f"trial samples of {args.trials}" if args.trials else "bench/judge_quality/labelled.jsonl",
              "batch_size": spec.batch_size, "threads": torch.get_num_threads(), "packed": bool(args.packed),
              "ratio": (n / timings["fast"]) / (n_of["plain"] / timings["plain"]), "plain_samples": n_of["plain"],
              "max_abs_p_yes_gap": gap, "within_tolerance": gap <= TOLERANCE, "missing": missing,
              "spearman": {}}
    for name, judge in arms.items():
        report |= {f"{name}_samples_per_s": n_of[name] / timings[name],
                   f"{name}_requests_per_s": n_of[name] * len(rubrics) / timings[name],
                   f"{name}_s": timings[name], f"{name}_forward_passes": judge.stats.forward_passes}
    if args.compare_prefix:
        report["prefix_only_over_fast"] = timings["prefix_only"] / timings["fast"]
    for rb in rubrics:
        label = LABEL_OF.get(rb)
        if not label:
            continue
        pairs = [(s, r.get(label)) for s, (q, r) in zip(scores["fast"], [(q, r) for q in rubrics for r in rows])
                 if q == rb and s is not None and r.get(label) is not None]
        if pairs:
            report["spearman"][rb] = float(spearmanr(*zip(*pairs)).statistic)
    print(f"{n} samples x {', '.join(rubrics)} = {len(reqs)} requests ({report['items']}), batch_size {spec.batch_size}"
          + (f"; plain arm on the first {n_of['plain']}" if n_of["plain"] < n else ""))
    for name, what in (("plain", "(a) plain per-call "), ("fast", "(b) prefix+batched "), ("prefix_only", "(c) rubric prefix only")):
        if name in arms:
            print(f"{what}: {report[f'{name}_samples_per_s']:.3f} samples/s, {report[f'{name}_requests_per_s']:.2f} "
                  f"requests/s ({timings[name]:.1f} s, {arms[name].stats.forward_passes} forward passes)")
    print(f"ratio {report['ratio']:.2f}x; max |P(yes) plain - fast| = {gap:.2e} "
          f"({'within' if gap <= TOLERANCE else 'OVER'} tolerance {TOLERANCE:g}); missing {missing}")
    for rb, rho in report["spearman"].items():
        print(f"Spearman {rb} vs {LABEL_OF[rb]}: {rho:.3f}")
    print(json.dumps(report))
    return report


def study_rows(folder: Path, study: str | None, n: int) -> list[dict]:
    """The first n trial samples of a run folder, in trial order (whole trials: a study's batch shape), with the
    concept text the study's judge is told."""
    from steeropt.evaluation.objectives.tier1 import ConceptInfo
    from steeropt.specs.factory import build

    if study is None:
        raise SystemExit("--trials needs --study (the spec whose concept the judge is told)")
    concept = ConceptInfo.from_concept(build("study", study).concept).judge_text
    recs = [json.loads(line) for f in sorted(folder.glob("trial-*.jsonl")) for line in f.read_text().splitlines() if line]
    if not recs:
        raise SystemExit(f"no trial-*.jsonl samples in {folder}")
    return [{"prompt": r["prompt"], "response": r["text"], "concept": concept} for r in recs[:n]]


if __name__ == "__main__":
    main()
