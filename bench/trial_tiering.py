"""How much judging could tiering *by trial* save on a finished study, at best, without changing the pick?

    python bench/trial_tiering.py runs/quickstart --objective tiered-qwen

Reads the run folder's judged trial samples (trial-*.jsonl) and, per trial, each axis's mean with the objective's
95% bootstrap interval over its samples. A trial-level rule may skip judging a trial only if, with its interval, the
trial cannot meet a constraint (upper end below the threshold) or cannot reach the feasible front (its upper ends
dominated by the lower ends of a trial that surely meets every constraint). This script applies that rule to the
*fully judged* values, so the share it prints is an upper bound for any rule that sees less (the cheap tier, a
first stage of the prompts); `--scalar` adds "cannot beat the scalar of a trial that surely meets every constraint"
(what the overall choice reads). `--stage K` applies it to the first K prompts of each family alone (what a
two-stage rule would see). It then checks that the per-family choice (the feasible trial with the highest scalar
on that family's samples) stays the same without the skipped trials.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path


def main(argv=None) -> dict:
    from steeropt.evaluation.objectives.aggregate import harmonic_mean, mean, mean_ci
    from steeropt.evaluation.objectives.config import compare as ok
    from steeropt.specs.factory import build

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folder")
    ap.add_argument("--objective", default="tiered-qwen")
    ap.add_argument("--stage", type=int, default=None, help="judge only the first K prompts of each family")
    ap.add_argument("--scalar", action="store_true",
                    help="also skip a trial whose scalar (upper end) is below a surely feasible trial's (lower end)")
    args = ap.parse_args(argv)
    spec = build("objective", args.objective)
    cons = [(c.name, c.op, c.value) for c in spec.constraints]
    objs = [o.name for o in spec.objectives]  # all maximised in the shipped objectives
    b = spec.bootstrap
    trials = {int(f.stem.split("-")[1]): [json.loads(x) for x in f.read_text().splitlines() if x]
              for f in sorted(Path(args.folder).glob("trial-*.jsonl"))}
    if not trials:
        raise SystemExit(f"no trial-*.jsonl in {args.folder}")

    def seen(recs):
        """The samples the rule sees: all, or the first `stage` of each family."""
        if args.stage is None:
            return recs
        out, count = [], {}
        for r in recs:
            count[r["family"]] = count.get(r["family"], 0) + 1
            if count[r["family"]] <= args.stage:
                out.append(r)
        return out

    def bounds(recs):
        out = {}
        for name in {*objs, *(c[0] for c in cons)}:
            v = [r["scores"][name] for r in recs]
            ci = mean_ci(v, n=b.n, level=b.level, seed=b.seed, unit=True)
            out[name] = (mean(v), *(ci or (mean(v), mean(v))))
        return out

    bd = {n: bounds(seen(recs)) for n, recs in trials.items()}
    # the scalarization (a harmonic mean) rises with each axis: its bounds are those of the axes' bounds
    scalar = lambda x, end: harmonic_mean({k: x[k][end] for k in spec.scalarization.of})  # noqa: E731
    surely_feasible = {n for n, x in bd.items() if all(ok(x[c][1] if op == ">=" else x[c][2], op, t) for c, op, t in cons)}
    skip = {}
    for n, x in bd.items():
        if any(not ok(x[c][2] if op == ">=" else x[c][1], op, t) for c, op, t in cons):
            skip[n] = "cannot meet a constraint"
        elif any(m != n and all(bd[m][o][1] > x[o][2] for o in objs) for m in surely_feasible):
            skip[n] = "cannot reach the feasible front"
        elif args.scalar and any(m != n and scalar(bd[m], 1) > scalar(x, 2) for m in surely_feasible):
            skip[n] = "cannot beat a surely feasible trial's scalar"

    def choice(keep):
        out = {}
        for fam in sorted({r["family"] for recs in trials.values() for r in recs}):
            best = None
            for n in keep:
                sub = [r for r in trials[n] if r["family"] == fam]
                v = {k: mean([r["scores"][k] for r in sub]) for k in sub[0]["scores"]}
                if all(ok(v[c], op, t) for c, op, t in cons):
                    s = harmonic_mean({k: v[k] for k in spec.scalarization.of})
                    best = max(best or (s, n), (s, n))
            out[fam] = None if best is None else best[1]
        return out

    full, kept = choice(list(trials)), choice([n for n in trials if n not in skip])
    judged = sum(len(r) for r in trials.values())
    # an oracle on the full values spares a skipped trial all its samples; a first stage spares the rest
    saved = sum(len(trials[n]) - (len(seen(trials[n])) if args.stage else 0) for n in skip) / judged
    for n, x in sorted(bd.items()):
        print(f"trial {n}: " + ", ".join(f"{k} {m:.2f} [{lo:.2f}, {hi:.2f}]" for k, (m, lo, hi) in sorted(x.items()))
              + (f"  -> skip: {skip[n]}" if n in skip else ""))
    print(f"{len(skip)} of {len(trials)} trials skippable; judge requests saved at most {saved:.0%} "
          f"({'first ' + str(args.stage) + ' prompts per family judged' if args.stage else 'rule applied to the fully judged values'}); "
          f"per-family choice (trial number) judge-all {full} vs skipping {kept}: {'same' if full == kept else 'CHANGED'}")
    return {"trials": len(trials), "skippable": sorted(skip), "saved_share_max": saved, "same_choice": full == kept}


if __name__ == "__main__":
    main()
