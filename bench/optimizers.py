"""Optimizer sample efficiency on the quickstart problem, replayed on the recorded dense grid.

    .venv/bin/python bench/optimizers.py [--grid bench/data/quickstart_grid.json] [--seeds 5] [--bo-seeds 3]

Each optimizer runs through steeropt's make_optimizer ask/tell on a real Optuna sqlite storage (temp dir),
in batches of the quickstart's batch_size (4). A proposed α is answered with the recorded evaluation at the
NEAREST recorded α (no interpolation: every answer is a real evaluation of the quickstart objective). The
target is 95% of the hypervolume of the whole dense grid (feasible points, reference = the study's fixed
reference [0, 0]); the figure is the number of evaluations after which the optimizer's feasible points
reach it. The replay is deterministic given the seed: it re-uses one recorded judge draw per α and does not
re-sample judge or generation noise.
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGET = 0.95

# name -> (make_optimizer name, settings). TPE as the quickstart (and Heretic) use it: multivariate TPE
# after a few random startup trials; NSGA-II with a population of 8 so it evolves within the budget.
OPTIMIZERS = {
    "botorch": ("botorch", {}),
    "gp": ("gp", {}),  # Optuna's GPSampler (5 Sobol startup trials, like Ax's initialization_budget)
    "tpe": ("tpe", {"n_startup_trials": 6}),
    "nsga2": ("nsga2", {"population_size": 8}),
    "random": ("random", {}),
    "grid14": ("grid", {"grid_size": 14}),
}


class Lookup:
    def __init__(self, grid: dict):
        self.g, self.low, self.high, self.n = grid, grid["low"], grid["high"], grid["points"]
        self.recs = grid["gated"]

    def __call__(self, alpha: float) -> dict:
        i = round((alpha - self.low) / (self.high - self.low) * (self.n - 1))
        return self.recs[min(max(i, 0), self.n - 1)]


def dense_hypervolume(grid: dict) -> float:
    from steeropt.report.pareto import hypervolume

    names = [n for n, _ in grid["objectives"]]
    pts = [[r["objectives"][n] for n in names] for r in grid["gated"] if not r["failed"] and r["feasible"]]
    return hypervolume(pts, grid["reference"], [d for _, d in grid["objectives"]])


def run_one(grid: dict, key: str, seed: int, budget: int, batch: int) -> dict:
    from steeropt.search.optimizers import make_optimizer
    from steeropt.report.pareto import hypervolume
    from steeropt.specs import build

    space = build("search_space", "wedding-add-l10")
    name, settings = OPTIMIZERS[key]
    objectives = [tuple(o) for o in grid["objectives"]]
    constraints = [tuple(c) for c in grid["constraints"]]
    dirs = [d for _, d in objectives]
    look = Lookup(grid)
    target = TARGET * dense_hypervolume(grid)
    hv_curve, front, reached, t0 = [], [], None, time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        opt = make_optimizer(name, space=space, objectives=objectives, constraints=constraints,
                             storage=f"sqlite:///{tmp}/bench.db", study_name=f"{key}-{seed}", seed=seed,
                             settings=settings)
        n = 0
        while n < budget:
            cands = opt.ask(min(batch, budget - n))
            if not cands:
                break
            for c in cands:
                (alpha,) = c.params.values()
                rec = look(alpha)
                n += 1
                if rec["failed"]:
                    opt.tell(c.number, None, failed_reason=rec["reason"] or "failed")
                else:
                    vals = {k: rec["objectives"][k] for k, _ in objectives}
                    opt.tell(c.number, vals, constraints={k: rec["objectives"].get(k, vals.get(k)) for k, _, _ in constraints})
                    if rec["feasible"]:
                        front.append([vals[k] for k, _ in objectives])
                hv = hypervolume(front, grid["reference"], dirs) if front else 0.0
                hv_curve.append(hv)
                if reached is None and hv >= target - 1e-12:
                    reached = n
        fit = list(getattr(opt, "fit_seconds", []))
        opt.close()
    return {"optimizer": key, "seed": seed, "evaluations": n, "reached_at": reached,
            "final_hv_share": hv_curve[-1] / (target / TARGET) if hv_curve else 0.0,
            "hv_curve": hv_curve, "seconds": time.perf_counter() - t0, "ask_fit_seconds": fit}


def summarize(runs: list[dict], dense_points: int) -> dict:
    out = {}
    for key in OPTIMIZERS:
        rs = [r for r in runs if r["optimizer"] == key]
        if not rs:
            continue
        vals = [r["reached_at"] if r["reached_at"] is not None else float("inf") for r in rs]
        med = statistics.median(vals)
        out[key] = {"seeds": len(rs), "budget": max(r["evaluations"] for r in rs), "reached_at": [r["reached_at"] for r in rs],
                    "median": med, "min": min(vals), "max": max(vals),
                    "reached_share": sum(v != float("inf") for v in vals) / len(vals),
                    "median_share_of_dense_grid": med / dense_points,
                    "median_final_hv_share": statistics.median(r["final_hv_share"] for r in rs),
                    "mean_ask_fit_seconds": (statistics.mean(s for r in rs for s in r["ask_fit_seconds"])
                                             if any(r["ask_fit_seconds"] for r in rs) else None)}
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--grid", default=str(ROOT / "bench/data/quickstart_grid.json"))
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--bo-seeds", type=int, default=10)
    ap.add_argument("--budget", type=int, default=24)
    ap.add_argument("--bo-budget", type=int, default=24)
    ap.add_argument("--only", nargs="+", choices=list(OPTIMIZERS), help="run only these optimizers")
    ap.add_argument("--json")
    args = ap.parse_args()
    res = run(json.loads(Path(args.grid).read_text()), args.seeds, args.bo_seeds, args.budget, args.bo_budget,
              only=args.only)
    text = json.dumps(res, indent=1, default=str)
    if args.json:
        Path(args.json).write_text(text)
    print(json.dumps(res["summary"], indent=1, default=str))


BAYESIAN = ("botorch", "gp")  # model-based: --bo-seeds / --bo-budget


def run(grid, seeds, bo_seeds, budget, bo_budget, batch=4, log=print, only=None) -> dict:
    runs = []
    for key in only or OPTIMIZERS:
        n_seeds = bo_seeds if key in BAYESIAN else seeds
        b = bo_budget if key in BAYESIAN else (14 if key == "grid14" else budget)  # the grid is its 14 points
        for seed in range(n_seeds):
            r = run_one(grid, key, seed, b, batch)
            log(f"  optimizers: {key} seed {seed}: reached 95% HV at {r['reached_at']} ({r['seconds']:.0f} s)")
            runs.append(r)
    return {"dense_points": grid["points"], "dense_hv": dense_hypervolume(grid), "target_share": TARGET,
            "lookup": "nearest recorded alpha", "batch": batch, "summary": summarize(runs, grid["points"]), "runs": runs}


if __name__ == "__main__":
    main()
