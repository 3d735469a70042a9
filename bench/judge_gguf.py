"""The quantised judge path: the 1.5B judge's own GGUF (the file its part wheels join to) served by llama.cpp,
scored through the OpenAI-compatible backend, against the fp32 in-process judge's prefix-cached batched path.

    python bench/judge_gguf.py [--n 8] [--threads 2]

Same labelled items and yes/no rubrics as bench/judge_speed.py, one run: (a) fp32 in process (LocalJudge,
prefix KV cache + batches), (b) llama.cpp server on the GGUF (its prompt cache reuses the shared rubric prefix
of consecutive requests), concurrency 1 (2 cores). Prints samples/s of both, the largest |P(yes)| gap and each
arm's Spearman with the labels, as JSON on the last line.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HERE = ROOT / "bench"
LABEL_OF = {"concept_yn": "concept_band", "fluency_yn": "coherence_band", "relevance_yn": None}


def spearman(scores, rows, rubrics) -> dict:
    from scipy.stats import spearmanr

    out = {}
    for rb in rubrics:
        label = LABEL_OF.get(rb)
        pairs = [(s, r[label]) for s, (q, r) in zip(scores, [(q, r) for q in rubrics for r in rows])
                 if label and q == rb and s is not None]
        if len(pairs) > 2:
            out[rb] = float(spearmanr(*zip(*pairs)).statistic)
    return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=8, help="labelled items, evenly spaced (x 3 rubrics)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    import torch

    from steeropt.engine.models import load_model
    from steeropt.engine.models.loading import split_gguf_path
    from steeropt.evaluation.judges import JudgeRequest, load_judge_spec, make_judge
    from steeropt.evaluation.judges.local_backend import LocalJudge
    from tests.servers import LlamaServer

    torch.set_num_threads(args.threads)
    name = "qwen2.5-coder-1.5b-instruct"
    rows = [json.loads(x) for x in (HERE / "judge_quality" / "labelled.jsonl").read_text().splitlines() if x.strip()]
    rows = rows[::max(1, len(rows) // args.n)][:args.n]
    rubrics = ["concept_yn", "fluency_yn", "relevance_yn"]
    reqs = [JudgeRequest(rb, r["prompt"], r["response"], r["concept"]) for rb in rubrics for r in rows]
    spec = load_judge_spec("local-qwen1.5b")
    res = {"samples": len(reqs), "rubrics": rubrics, "threads": args.threads}

    lm = load_model(name)
    fp32 = LocalJudge(spec, None, lm=lm)
    fp32.judge(reqs[:1])  # warm-up
    t = time.perf_counter()
    a = [x.score for x in fp32.judge(reqs)]
    res["fp32_samples_per_s"] = len(reqs) / (time.perf_counter() - t)
    del fp32, lm

    server = LlamaServer.start(split_gguf_path(name), extra_args=["--n_threads", str(args.threads)])
    try:
        gguf_spec = spec.model_dump() | {"name": "llama-server-qwen1.5b", "backend": "openai", "base_url": server.base_url,
                                         "model": name, "api_key_env": None, "concurrency": 1, "timeout_s": 300}
        judge = make_judge(gguf_spec, cache=None)
        judge.judge(reqs[:1])
        t = time.perf_counter()
        b = [x.score for x in judge.judge(reqs)]
        res["gguf_samples_per_s"] = len(reqs) / (time.perf_counter() - t)
        judge.close()
    finally:
        server.stop()
    gaps = [abs(x - y) for x, y in zip(a, b) if x is not None and y is not None]
    res |= {"ratio": res["gguf_samples_per_s"] / res["fp32_samples_per_s"], "max_abs_p_yes_gap": max(gaps) if gaps else None,
            "missing_gguf": sum(x is None for x in b), "spearman_fp32": spearman(a, rows, rubrics),
            "spearman_gguf": spearman(b, rows, rubrics), "gguf": str(split_gguf_path(name).name)}
    print(f"fp32 in process: {res['fp32_samples_per_s']:.3f} samples/s; llama.cpp GGUF: {res['gguf_samples_per_s']:.3f} "
          f"samples/s ({res['ratio']:.2f}x); max |P(yes) gap| {res['max_abs_p_yes_gap']}; missing {res['missing_gguf']}")
    print(f"Spearman with labels: fp32 {res['spearman_fp32']}, gguf {res['spearman_gguf']}")
    print(json.dumps(res))
    return res


if __name__ == "__main__":
    main()
