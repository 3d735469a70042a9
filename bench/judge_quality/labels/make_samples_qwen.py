"""Raw steered outputs of Qwen2.5-Coder-1.5B-Instruct for the labelled judge set.

The model is loaded once; per concept, a diff-in-means vector at layer 14 (the concept file's 8 positive vs 8
matched neutral sentences) steers greedy answers (48 new tokens) to the concept file's first 6 prompts by `add`
over a grid of normalised strengths, plus α=0. All strengths × prompts of a concept go in one generate call.
At layer 14 on this model add ≈ 0.8-1.0 blends a topic into answers and ≈ 1.3 takes over. The styles and the
persona break sooner: a probe (`--probe`, 2 prompts) gave pirate-voice apostrophe soup ("A'igh an' an''a' th'air'")
already at 0.9, so they get a lower grid. Writes raw_samples_qwen.jsonl next to this file after each concept
(the fields of raw_samples.jsonl plus "model").

    flock /tmp/steeropt-heavy.lock env STEEROPT_NUM_THREADS=2 \
        .venv/bin/python bench/judge_quality/labels/make_samples_qwen.py [--probe] [--concepts a,b]
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from steeropt.engine.generation import Decoding, Generator
from steeropt.engine.models import load_model
from steeropt.engine.vectors import VectorSet, diff_in_means
from steeropt.specs.concepts import load_concept
from steeropt.types import InterventionPlan, Site

HERE = Path(__file__).parent
MODEL = "qwen2.5-coder-1.5b-instruct"
LAYER = 14
CONCEPTS = ["wedding", "astronomy", "pirate", "formal", "enthusiasm", "ocean"]
ALPHAS = (0.0, 0.6, 0.9, 1.1, 1.4, 1.8)
STYLE_ALPHAS = {"pirate": (0.0, 0.2, 0.35, 0.5, 0.65, 0.8), "formal": (0.0, 0.3, 0.5, 0.7, 0.9, 1.2),
                "enthusiasm": (0.0, 0.3, 0.5, 0.7, 0.9, 1.2)}
PROBE_ALPHAS = (0.9, 1.4, 2.0, 2.6)
N_PROMPTS = 6


def generate(lm, concept: str, alphas, n_prompts: int) -> list[dict]:
    c = load_concept(concept)
    vectors = VectorSet()
    vectors.add(diff_in_means(lm, c.positive, c.negative, layer=LAYER, name=f"{concept}@{LAYER}"))
    gen = Generator(lm, vectors)
    prompts = [("mixed", p) for p in c.prompts[:n_prompts]]
    plans = [InterventionPlan([Site(LAYER, "add", f"{concept}@{LAYER}")], [a]) for a in alphas]
    rows = []
    for s in gen.run(prompts, plans, Decoding(max_new_tokens=48), seed=0):
        a = alphas[s.candidate]
        rows.append({"concept_file": concept, "prompt": s.prompt, "response": s.text.strip(), "alpha": a,
                     "controller": "none" if a == 0 else "add", "layer": None if a == 0 else LAYER,
                     "finished": s.finished, "model": MODEL})
    return rows


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--probe", action="store_true", help="2 prompts at larger strengths; print, write nothing")
    ap.add_argument("--concepts", default=",".join(CONCEPTS))
    args = ap.parse_args(argv)
    lm = load_model(MODEL)
    out = []
    for concept in args.concepts.split(","):
        t0 = time.perf_counter()
        alphas = PROBE_ALPHAS if args.probe else STYLE_ALPHAS.get(concept, ALPHAS)
        rows = generate(lm, concept, alphas, 2 if args.probe else N_PROMPTS)
        print(f"{concept}: {len(rows)} rows in {time.perf_counter() - t0:.0f} s", flush=True)
        if args.probe:
            for r in rows:
                print(f"  [{r['alpha']}] {r['prompt']} -> {r['response'][:260]!r}", flush=True)
        if args.probe:
            continue
        for row in rows:
            row["raw_id"] = len(out)
            out.append(row)
        (HERE / "raw_samples_qwen.jsonl").write_text("".join(json.dumps(r) + "\n" for r in out))


if __name__ == "__main__":
    main()
