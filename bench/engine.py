"""Steering engine benchmark: hook overhead, candidate batching, cold vs warm load.

    .venv/bin/python bench/engine.py [--tokens 64] [--batch 16] [--repeats 2]

Prints figures and ratios measured side by side in one run (the machine is shared and noisy).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import torch

from steeropt.specs.concepts import load_concept
from steeropt.engine.generation import Decoding, Generator
from steeropt.engine.models import load_model
from steeropt.types import InterventionPlan, Site
from steeropt.engine.vectors import VectorSet, diff_in_means


def timed(fn, repeats):
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def batching(gen, prompts, plans, decoding, ks=(1, 4, 8, 16), repeats=1, log=None) -> list[dict]:
    """K candidate plans x the same prompts: one batched Generator.run vs K sequential calls (one per plan).
    Both arms use the real generation path (rows stop at EOS, a batch runs until its last row stops)."""
    out = []
    for k in ks:
        ps = plans[:k]
        t_b = timed(lambda: gen.run(prompts, ps, decoding), repeats)
        t_s = timed(lambda: [gen.run(prompts, [pl], decoding) for pl in ps], repeats)
        out.append({"k": k, "prompts_per_candidate": len(prompts), "new_tokens": decoding.max_new_tokens,
                    "batched_s": t_b, "sequential_s": t_s, "speedup": t_s / t_b})
        if log:
            log(f"  batching K={k}: batched {t_b:.1f}s, sequential {t_s:.1f}s, speedup {t_s / t_b:.2f}x")
    return out


def load_times() -> dict:
    """Cold = fresh cache dir (GGUF dequantized and cached); warm = the second load from that cache."""
    code = "import time,sys; from steeropt.engine.models import load_model; lm=load_model(); print(lm.load_seconds)"
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, STEEROPT_CACHE_DIR=tmp)
        run = lambda: float(subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                                           text=True, check=True).stdout.strip().splitlines()[-1])
        return {"cold_load_s": run(), "warm_load_s": run()}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--json", help="write figures here too")
    args = ap.parse_args()
    os.environ.setdefault("STEEROPT_NUM_THREADS", str(os.cpu_count() or 1))  # load_model applies it
    lm = load_model()
    c = load_concept("wedding")
    vs = VectorSet()
    vs.add(diff_in_means(lm, c.positive, c.negative, 4, name="wedding"))
    # min_new_tokens: every row runs all steps, so both arms do the same work.
    dec = Decoding(max_new_tokens=args.tokens)
    prompts = [("p", c.prompts[i % len(c.prompts)]) for i in range(args.batch)]
    gen = Generator(lm, vs)
    unsteered, steered = [InterventionPlan([], [])], [InterventionPlan([Site(4, "add", "wedding")], [0.05])]
    gen.run(prompts[:2], unsteered, Decoding(max_new_tokens=4))  # warm-up
    tokens = {}

    def run(plans, key):
        s = gen.run(prompts, plans, dec)
        tokens[key] = sum(len(x.token_ids) for x in s)

    t_un = timed(lambda: run(unsteered, "un"), args.repeats)
    t_st = timed(lambda: run(steered, "st"), args.repeats)
    fig = {"batch": args.batch, "new_tokens": args.tokens,
           "unsteered_tok_s": tokens["un"] / t_un, "steered_tok_s": tokens["st"] / t_st}
    fig["steered_over_unsteered"] = fig["steered_tok_s"] / fig["unsteered_tok_s"]

    # K candidates × P prompts in one batched call vs K sequential calls.
    k, p = 8, prompts[:2]
    plans = [InterventionPlan([Site(4, "add", "wedding")], [0.05 * i]) for i in range(k)]
    short = Decoding(max_new_tokens=32)
    t_batched = timed(lambda: gen.run(p, plans, short), 1)
    t_seq = timed(lambda: [gen.run(p, [pl], short) for pl in plans], 1)
    fig |= {"k": k, "prompts_per_candidate": len(p), "batched_s": t_batched, "sequential_s": t_seq,
            "batched_speedup": t_seq / t_batched}
    fig |= load_times()
    for key, value in fig.items():
        print(f"{key:>24}: {value:.3f}" if isinstance(value, float) else f"{key:>24}: {value}")
    print(f"goals: steered/unsteered >= 0.95 -> {fig['steered_over_unsteered']:.3f}; "
          f"K=8 batched >= 3x -> {fig['batched_speedup']:.2f}x; warm load <= 3 s -> {fig['warm_load_s']:.2f} s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(fig, f, indent=2)


if __name__ == "__main__":
    main()
