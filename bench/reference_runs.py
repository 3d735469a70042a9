"""The README's reference runs: the quickstart and the four controller-comparison studies, each with two seeds,
then `pick` on every study and `compare` per seed; checks that the decisions agree across seeds.

    .venv/bin/python bench/reference_runs.py [--seeds 0 1] [--out runs/reference] [--only quickstart compare]

A seed is a replicate: it draws which selection prompts the trials are scored on (runner.parts.trial_prompts)
and seeds the optimizer; the held-out prompts stay the same. Each (study, seed) runs as its own study
`<name>-s<seed>` (a copy of the spec with that name and seed, written to OUT/specs/), in one storage OUT/steeropt.db
and one MLflow store OUT/mlflow.db, so nothing mixes with a user's own runs. Writes OUT/report.md and
OUT/report.json: per seed the comparison (paired differences, matched dose) and the picks, and the agreement:
- controller ranking: every paired difference called clear in one seed has the same sign in the other seed;
- picked α per family: the chosen strengths' intervals (bootstrap of the fitted choice) overlap across seeds.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
COMPARE = ["compare-add", "compare-clamp", "compare-affine", "compare-head-add"]
# --set qwen: the controller comparison on Qwen2.5-Coder-1.5B (its quickstart runs apart: scripts/quickstart.sh)
SETS = {"135m": COMPARE, "qwen": ["compare-qwen-add", "compare-qwen-clamp", "compare-qwen-head-add"]}


def variant(name: str, seed: int, out: Path) -> Path:
    from steeropt.specs import build

    spec = build("study", ROOT / "studies" / f"{name}.yaml")
    d = spec.model_dump(mode="json")  # includes applied, paths absolute
    d.update(name=f"{name}-s{seed}", seed=seed, storage=f"sqlite:///{out / 'steeropt.db'}",
             tracking_uri=f"sqlite:///{out / 'mlflow.db'}",
             experiment=(f"{spec.experiment}-s{seed}" if spec.experiment else None))
    path = out / "specs" / f"{name}-s{seed}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(d, sort_keys=False))
    return path


def run_all(names, seeds, out: Path, pick_only: bool = False, held_out_all: bool = False) -> dict:
    from steeropt.engine.models import load_model
    from steeropt.report.compare import compare
    from steeropt.deploy.pick import pick
    from steeropt.runner.study import Study

    from steeropt.specs import build

    lm = load_model(build("study", ROOT / "studies" / f"{names[0]}.yaml").model)  # one loaded copy for every study
    res = {"seeds": list(seeds), "studies": {}, "compare": {}, "timing": {}}
    # compare studies of every seed before the second quickstart: the comparison tables come first
    order = [(s, n) for s in seeds[:1] for n in names] + [(s, n) for s in seeds[1:] for n in names]
    for seed, name in order:
        path = variant(name, seed, out)
        t = time.time()
        if not pick_only:
            study = Study.from_spec(str(path), runs_dir=out / "runs")
            study.setup(lm=lm)
            try:
                study.run()
            finally:
                study.close()
        t_run = time.time() - t
        try:
            # the held-out check (the expensive part) for the quickstart; compare studies report their
            # fitted choice per family with its interval (what the seed agreement needs)
            p = pick(str(path), lm=lm, out=out / "profiles" / f"{name}-s{seed}",
                     held_out=name == "demo-135m" or held_out_all).to_dict()
        except Exception as exc:  # keep the other studies' runs; `--pick-only` redoes the picks
            import traceback

            traceback.print_exc()
            p = {"error": f"{type(exc).__name__}: {exc}", "families": {}}
        res["studies"][f"{name}-s{seed}"] = {"pick": p, "seconds_run": t_run,
                                             "seconds_pick": time.time() - t - t_run}
        print(f"[reference] {name} seed {seed}: run {t_run:.0f} s, pick {time.time() - t - t_run:.0f} s", flush=True)
        cmp_names = [n for n in names if n.startswith("compare")]
        if len(cmp_names) >= 2 and name == cmp_names[-1]:
            c = compare([str(out / "specs" / f"{n}-s{seed}.yaml") for n in cmp_names], out_dir=out / f"compare-s{seed}",
                        name=f"reference-compare-s{seed}")
            res["compare"][seed] = {"dict": c.to_dict(), "markdown": c.markdown()}
        if not pick_only:
            (out / "partial.json").write_text(json.dumps(res, indent=1, default=str))  # what is done so far
    return res


def agreement(res: dict) -> dict:
    seeds = res["seeds"]
    out = {"ranking": [], "alpha": []}
    if len(seeds) >= 2 and all(s in res["compare"] for s in seeds[:2]):
        a, b = (res["compare"][s]["dict"]["paired"] or {"pairs": []} for s in seeds[:2])
        key = lambda r: (r["a"].rsplit("-s", 1)[0], r["b"].rsplit("-s", 1)[0], r["figure"])  # noqa: E731
        other = {key(r): r for r in b["pairs"]}
        for r in a["pairs"]:
            o = other.get(key(r))
            if o is None or r["diff"] is None or o["diff"] is None or not (r["clear"] or o["clear"]):
                continue
            same = (r["diff"] > 0) == (o["diff"] > 0)
            # a contradiction: clear in both seeds, opposite signs; clear in one only is a lack of power
            verdict = ("confirmed" if r["clear"] and o["clear"] and same else
                       "CONTRADICTED" if r["clear"] and o["clear"] else "clear in one seed only")
            out["ranking"].append({"pair": key(r), "seed_a": [r["diff"], r["ci"], r["clear"]],
                                   "seed_b": [o["diff"], o["ci"], o["clear"]], "same_sign": same, "verdict": verdict})
    names = sorted({k.rsplit("-s", 1)[0] for k in res["studies"]})
    for n in names:
        picks = [res["studies"].get(f"{n}-s{s}", {}).get("pick") for s in seeds[:2]]
        if None in picks:
            continue
        for fam in picks[0]["families"]:
            fa, fb = picks[0]["families"][fam], picks[1]["families"][fam]
            ia, ib = (fa.get("fit") or {}).get("x_ci"), (fb.get("fit") or {}).get("x_ci")
            xa = (fa.get("setting") or {}).get("params")
            xb = (fb.get("setting") or {}).get("params")
            overlap = None if not ia or not ib else bool(ia[0] <= ib[1] and ib[0] <= ia[1])
            out["alpha"].append({"study": n, "family": fam, "status": [fa["status"], fb["status"]],
                                 "alpha": [xa, xb], "alpha_ci": [ia, ib], "overlap": overlap})
    return out


def report_md(res: dict, agree: dict) -> str:
    lines = ["# Reference runs (bench/reference_runs.py)", ""]
    for seed in res["seeds"]:
        lines += [f"## seed {seed}", ""]
        if seed in res["compare"]:
            lines += [res["compare"][seed]["markdown"], ""]
        lines += ["| study | family | status | α [95% of the fitted choice] | held-out concept | unsteered | held-out "
                  "coherency | held-out relevance | why |", "|---|---|---|---|---|---|---|---|---|"]
        for k, v in res["studies"].items():
            if not k.endswith(f"-s{seed}"):
                continue
            for fam, f in v["pick"]["families"].items():
                params = (f.get("setting") or {}).get("params") or {}
                a = ", ".join(f"{x:.3f}" for x in params.values() if isinstance(x, float)) or "—"
                ci = (f.get("fit") or {}).get("x_ci")
                ho, un = f.get("held_out") or {}, f.get("unsteered_held_out") or {}

                def cell(d, n):
                    x = d.get(n) or {}
                    return "—" if x.get("value") is None else (f"{x['value']:.2f}" + (
                        f" [{x['ci'][0]:.2f}, {x['ci'][1]:.2f}]" if x.get("ci") else ""))
                lines.append(f"| {k} | {fam} | {f['status']} | {a}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")
                             + f" | {cell(ho, 'concept')} | {cell(un, 'concept')} | {cell(ho, 'coherency')} | "
                               f"{cell(ho, 'relevance')} | {(f.get('reason') or '')[:160]} |")
        lines.append("")
    lines += ["## agreement across seeds", ""]
    rk = agree["ranking"]
    n = {v: sum(r["verdict"] == v for r in rk) for v in ("confirmed", "CONTRADICTED", "clear in one seed only")}
    lines.append(f"- controller ranking: of {len(rk)} differences clear in at least one seed, {n['confirmed']} are clear "
                 f"in both with the same sign, {n['CONTRADICTED']} clear in both with opposite signs, "
                 f"{n['clear in one seed only']} clear in one seed only")
    for r in rk:
        lines.append(f"  - {r['pair']}: seed A {r['seed_a'][0]:+.3f} (clear {r['seed_a'][2]}), seed B "
                     f"{r['seed_b'][0]:+.3f} (clear {r['seed_b'][2]}) → {r['verdict']}")
    al = [a for a in agree["alpha"] if a["overlap"] is not None]
    lines.append(f"- picked α per family: {sum(a['overlap'] for a in al)} of {len(al)} (study, family) pairs have "
                 "overlapping intervals of the fitted choice across seeds")
    for a in agree["alpha"]:
        lines.append(f"  - {a['study']} / {a['family']}: {a['alpha']} intervals {a['alpha_ci']} → overlap {a['overlap']}")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--set", choices=sorted(SETS), default="135m", help="which controller studies (qwen: the 1.5B's)")
    ap.add_argument("--out", default=str(ROOT / "runs" / "reference"))
    ap.add_argument("--only", nargs="+", choices=["quickstart", "compare"], default=["quickstart", "compare"])
    ap.add_argument("--pick-only", action="store_true", help="studies already run: redo the picks and comparisons")
    ap.add_argument("--merge", nargs="+", help="only merge the partial.json of these OUT dirs (seeds run apart)")
    ap.add_argument("--redo-compare", action="store_true",
                    help="studies already run: pick the compare studies and compare them again (no model runs, no held-out)")
    args = ap.parse_args()
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    if args.merge:
        res = {"seeds": [], "studies": {}, "compare": {}, "timing": {}}
        for d in args.merge:
            part = json.loads((Path(d) / "partial.json").read_text())
            for f in sorted(Path(d).glob("redo*.json")):  # `--redo-compare` / `--pick-only`: made again since
                redo = json.loads(f.read_text())
                part["studies"].update(redo["studies"])
                part["compare"].update(redo["compare"])
            res["seeds"] += [s for s in part["seeds"] if s not in res["seeds"]]
            res["studies"].update(part["studies"])
            res["compare"].update({int(k): v for k, v in part["compare"].items()})
        agree = agreement(res)
        (out / "report.json").write_text(json.dumps({**res, "agreement": agree}, indent=1, default=str))
        (out / "report.md").write_text(report_md(res, agree))
        print(report_md(res, agree))
        return
    compare_set = SETS[args.set]
    names = (compare_set if "compare" in args.only else []) + (
        ["demo-135m"] if "quickstart" in args.only and args.set == "135m" else [])  # the 135M's quickstart
    if args.redo_compare:
        res = run_all(compare_set, args.seeds, out, pick_only=True)
        (out / "redo.json").write_text(json.dumps(res, indent=1, default=str))
        return
    res = run_all(names, args.seeds, out, pick_only=args.pick_only)
    if args.pick_only:
        (out / f"redo-{'-'.join(args.only)}.json").write_text(json.dumps(res, indent=1, default=str))
        return
    agree = agreement(res)
    (out / "report.json").write_text(json.dumps({**res, "agreement": agree}, indent=1, default=str))
    (out / "report.md").write_text(report_md(res, agree))
    print(report_md(res, agree))


if __name__ == "__main__":
    main()
