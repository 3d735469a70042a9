"""Raw steered outputs of the embedded SmolLM2-135M for the labelled judge set.

For each concept, diff-in-means vectors at layers 4, 10 and 15 steer greedy answers over a grid of
strengths (add at 3 layers, clamp at layer 10, plus α=0), each plan on 4 prompts drawn from a pool.
The grid spans no effect -> blends -> takeover -> broken text -> loops -> gibberish (ranges measured
on a probe run: past α≈0.5 at layer 10 add the text breaks). Writes raw_samples.jsonl next to this file.

    STEEROPT_NUM_THREADS=1 OMP_NUM_THREADS=1 .venv/bin/python bench/judge_quality/labels/make_samples.py
"""
from __future__ import annotations

import json
import random
import re
from pathlib import Path

from steeropt import Decoding, Generator, load_model
from steeropt.engine.vectors import VectorSet, diff_in_means
from steeropt.specs.concepts import load_concept
from steeropt.types import InterventionPlan, Site

HERE = Path(__file__).parent
ROOT = HERE.parents[2]
CONCEPTS = ["wedding", "music", "astronomy", "dogs"]
LAYERS = (4, 10, 15)
GRID = [(4, "add", a) for a in (0.1, 0.2, 0.3, 0.45, 0.7)] \
    + [(10, "add", a) for a in (0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.7, 1.0)] \
    + [(15, "add", a) for a in (0.15, 0.3, 0.5, 0.8, 1.2)] \
    + [(10, "clamp", a) for a in (0.15, 0.3, 0.5, 0.8, 1.2)]
EXTRA_PROMPTS = [
    "How do I write a good cover letter?",
    "Give me three tips for staying healthy.",
    "How do I make a good cup of tea?",
    "What are the benefits of reading books?",
    "Write a short note thanking a colleague for their help.",
    "Why do leaves change colour in autumn?",
    "What is the best way to clean a bicycle chain?",
    "Explain what a budget is to a teenager.",
]
# prompts that already invite the concept would blur "concept came from steering"
ON_TOPIC = {"wedding": r"wedding|marr", "music": r"song|music|poem", "astronomy": r"night|star|sky|moon",
            "dogs": r"\bdog"}
PROMPTS_PER_PLAN, SETS = 4, 3
# The dogs vector drifts to pets in general (kittens, bunnies) and its fluent window is narrow, so it gets
# a finer pass over that window on fresh prompts (appended after the main grid, so raw ids stay stable).
FINE = {"dogs": [(10, "add", a) for a in (0.15, 0.25, 0.3, 0.35)] + [(15, "add", a) for a in (0.2, 0.25, 0.4)]
        + [(10, "clamp", a) for a in (0.2, 0.25, 0.35, 0.4)]}


def prompt_pool() -> list[str]:
    pool = []
    for f in sorted((ROOT / "studies" / "data").glob("*.jsonl")):
        pool += [json.loads(line)["prompt"] for line in f.read_text().splitlines() if line.strip()]
    return pool + EXTRA_PROMPTS


def main(seed: int = 0) -> None:
    lm = load_model("smollm2-135m-instruct")
    rng, out, fine_sets = random.Random(seed), [], {}
    pool = prompt_pool()
    for concept in CONCEPTS:
        c = load_concept(concept)
        vectors = VectorSet()
        for layer in LAYERS:
            vectors.add(diff_in_means(lm, c.positive, c.negative, layer=layer, name=f"{concept}@{layer}"))
        gen = Generator(lm, vectors, max_batch=40)
        usable = [p for p in pool if not re.search(ON_TOPIC[concept], p, re.I)]
        chosen = rng.sample(usable, PROMPTS_PER_PLAN * SETS)
        for k in range(SETS):  # each prompt set gets α=0 and every SETS-th plan: one generate call per set
            prompts = [("mixed", p) for p in chosen[k::SETS]]
            cells = [(10, "add", 0.0)] + GRID[k::SETS]
            plans = [InterventionPlan([Site(L, ctl, f"{concept}@{L}")], [a]) for L, ctl, a in cells]
            for s in gen.run(prompts, plans, Decoding(max_new_tokens=44), seed=seed):
                L, ctl, a = cells[s.candidate]
                out.append({"concept_file": concept, "prompt": s.prompt, "response": s.text.strip(),
                            "alpha": a, "controller": "none" if a == 0 else ctl,
                            "layer": None if a == 0 else L, "finished": s.finished})
            print(concept, k, len(out), flush=True)
        fine_sets[concept] = (gen, [p for p in usable if p not in chosen])
    for concept, cells in FINE.items():  # after the main grid so the main rows keep their order
        gen, rest = fine_sets[concept]
        prompts = [("mixed", p) for p in rng.sample(rest, 6)]
        plans = [InterventionPlan([Site(L, ctl, f"{concept}@{L}")], [a]) for L, ctl, a in cells]
        for s in gen.run(prompts, plans, Decoding(max_new_tokens=44), seed=seed):
            L, ctl, a = cells[s.candidate]
            out.append({"concept_file": concept, "prompt": s.prompt, "response": s.text.strip(), "alpha": a,
                        "controller": ctl, "layer": L, "finished": s.finished})
        print(concept, "fine", len(out), flush=True)
    for i, row in enumerate(out):
        row["raw_id"] = i
    (HERE / "raw_samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in out))


if __name__ == "__main__":
    main()
