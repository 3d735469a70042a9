"""Record the quickstart problem on a dense α grid, once, for the optimizer and tiering benchmarks.

    .venv/bin/python bench/quickstart_grid.py [--points 41] [--out bench/data/quickstart_grid.json]
    .venv/bin/python bench/quickstart_grid.py --spec studies/quickstart-qwen.yaml --points 13 \
        --out bench/data/quickstart_qwen_grid.json      # the three axes judged by the 1.5B model

Sets up studies/demo-135m.yaml (layer 10, objectives/quickstart.yaml, its 9 prompts, 40 new tokens, seed 0)
in a temp dir, generates every α of an evenly spaced grid over the space's [low, high] with the study's own
generator, prompts, decoding and seed (what Study._evaluate does), and evaluates the same samples twice:
  gated     = the quickstart objective as written (cheap gates first, the judge on survivors + audit)
  judge_all = the same objective with the gates removed (the judge scores every sample)
The JSON keeps, per α: objective values, feasibility, per-family values, judge requests and filter counts.
The judge cache is a fresh temp file, so request counts are the stack's own.
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT / "studies" / "demo-135m.yaml"


def _summ(res, alpha):
    fam = {f: {k: d["values"].get(k) for k in ("concept", "coherency", "relevance", "scalar", "hm")}
           for f, d in res.families.items()}
    for f, d in res.families.items():
        fam[f]["feasible"] = (d["values"].get("coherency") or 0.0) >= 0.4 if d["values"].get("coherency") is not None else None
    c = res.counts
    return {"alpha": alpha, "failed": res.failed, "reason": res.reason, "feasible": res.feasible,
            "objectives": res.objectives, "scalar": res.values.get("scalar"),
            "filtered_share": res.values.get("filtered_share"), "families": fam,
            "counts": {k: c[k] for k in ("samples", "filtered", "audited", "missing", "judge_requests")}
            | {"filtered_reasons": c["filtered_reasons"]}}


def record(points: int = 41, chunk: int = 8, log=print, spec: Path = SPEC) -> dict:
    from steeropt.evaluation.objectives import ObjectiveSpec, ObjectiveStack
    from steeropt.evaluation.objectives.tier1 import ConceptInfo
    from steeropt.runner.study import Study

    cwd = os.getcwd()
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)
        try:
            study = Study.from_spec(str(spec), track=False).setup()
            (pname, pdef), = [(p.name, p) for p in study.space.parameters()]
            alphas = [round(pdef.low + (pdef.high - pdef.low) * i / (points - 1), 6) for i in range(points)]
            all_spec = ObjectiveSpec.model_validate({**study.objective.model_dump(), "name": "judge-all", "gates": []})
            stack_all = ObjectiveStack(all_spec, study.lm, study.judge, ConceptInfo.from_concept(study.spec.concept))
            baseline = study.baseline_samples()
            gated, every, t_gen, t_eval = [], [], 0.0, 0.0
            for s in range(0, len(alphas), chunk):
                part = alphas[s:s + chunk]
                plans = [study.space.materialize({pname: a}) for a in part]
                t = time.perf_counter()
                samples = study.generator.run(study.prompts, plans, study.decoding, seed=study.spec.seed)
                t_gen += time.perf_counter() - t
                t = time.perf_counter()
                gated += [_summ(r, a) for r, a in zip(study.stack.evaluate(samples, plans, baseline, study.vectors), part)]
                every += [_summ(r, a) for r, a in zip(stack_all.evaluate(samples, plans, baseline, study.vectors), part)]
                t_eval += time.perf_counter() - t
                log(f"  grid: {s + len(part)}/{len(alphas)} α done ({time.perf_counter() - t0:.0f} s)")
            out = {"spec": str(Path(spec).resolve().relative_to(ROOT)), "parameter": pname, "low": pdef.low, "high": pdef.high,
                   "points": points, "prompts": [list(p) for p in study.prompts],
                   "decoding": study.decoding.__dict__, "seed": study.spec.seed,
                   "objectives": study.stack.objectives, "constraints": study.stack.constraints,
                   "reference": study.objective_reference(), "judge": study.judge.identity,
                   "seconds": {"generate": t_gen, "evaluate_both": t_eval, "total": time.perf_counter() - t0},
                   "gated": gated, "judge_all": every}
            study.close()
        finally:
            os.chdir(cwd)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", type=int, default=41)
    ap.add_argument("--out", default=str(ROOT / "bench/data/quickstart_grid.json"))
    ap.add_argument("--spec", default=str(SPEC), help="another study on the same space (default the quickstart)")
    args = ap.parse_args()
    data = record(args.points, spec=Path(args.spec).resolve())
    Path(args.out).write_text(json.dumps(data, indent=1, default=str))
    print(f"wrote {args.out} ({data['seconds']['total']:.0f} s)")


if __name__ == "__main__":
    main()
