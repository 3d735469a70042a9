"""Run every steeropt benchmark and write bench/results/report.md + report.json (the README's results table).

    .venv/bin/python bench/run_all.py            # full run (~1 h on 2 busy cores)
    .venv/bin/python bench/run_all.py --quick    # smaller sizes, same code paths
    .venv/bin/python bench/run_all.py --sections overhead,memory   # re-run some sections, keep the others
    .venv/bin/python bench/run_all.py --record   # re-record bench/data/quickstart_grid.json first
    .venv/bin/python bench/run_all.py --render   # re-render report.md from report.json

Sections: overhead (bench/overhead.py, project venv and bench/.peers-venv), batching (bench/engine.py),
optimizers (bench/optimizers.py on the recorded grid), tiering (the recorded grid, gated vs judge-all),
memory (peak RSS of `steeropt run studies/demo-135m.yaml`, the 135M), scaling (trial batch time vs prompts, tokens, sites).
Every figure is a ratio of arms measured side by side in this run; the load average is recorded with each.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
RESULTS = BENCH / "results"
GRID = BENCH / "data" / "quickstart_grid.json"
PY = sys.executable
SECTIONS = ["overhead", "batching", "optimizers", "tiering", "memory", "scaling", "speed", "tiering_judged"]
JUDGED_GRID = BENCH / "data" / "quickstart_qwen_grid.json"  # studies/quickstart-qwen.yaml: the 1.5B judge on 3 axes

FULL = {"overhead": {"tokens": 32, "rounds": 5}, "batching": {"tokens": 32, "prompts": 2, "ks": [1, 4, 8, 16]},
        "optimizers": {"seeds": 20, "bo_seeds": 10, "budget": 24, "bo_budget": 24},
        "memory": {"trials": 8}, "grid_points": 41, "judged_grid_points": 13, "speed": ["--judge-n", "48"],
        "speed_1p5b": ["--model", "qwen2.5-coder-1.5b-instruct", "--only", "limit,gen", "--batches", "16"],
        "scaling": {"base": (9, 40, 1), "prompts": [3, 9, 18], "tokens": [20, 40, 80], "sites": [1, 2, 4]}}
QUICK = {"overhead": {"tokens": 8, "rounds": 2}, "batching": {"tokens": 8, "prompts": 2, "ks": [1, 4, 8]},
         "optimizers": {"seeds": 2, "bo_seeds": 1, "budget": 12, "bo_budget": 8},
         "memory": {"trials": 4}, "grid_points": 21, "judged_grid_points": 5, "speed": ["--quick"],
         "speed_1p5b": ["--quick", "--model", "qwen2.5-coder-1.5b-instruct", "--only", "limit,gen", "--batches", "16"],
         "scaling": {"base": (3, 10, 1), "prompts": [3, 6], "tokens": [10, 20], "sites": [1, 2]}}


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')} load {os.getloadavg()[0]:.1f}] {msg}", file=sys.stderr, flush=True)


def rel(p: Path) -> str:
    return str(Path(p).resolve().relative_to(ROOT)) if str(Path(p).resolve()).startswith(str(ROOT)) else str(p)


def machine() -> dict:
    import torch

    from steeropt.runner.provenance import package_versions

    cpu = next((l.split(":", 1)[1].strip() for l in Path("/proc/cpuinfo").read_text().splitlines()
                if l.startswith("model name")), platform.processor())
    return {"cores": os.cpu_count(), "cpu": cpu, "cuda": torch.cuda.is_available(), "torch_threads": torch.get_num_threads(),
            "platform": platform.platform(), "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
            "versions": package_versions() | {"ax-platform": _v("ax-platform"), "numpy": _v("numpy")}}


def _v(pkg):
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(pkg)
    except PackageNotFoundError:
        return "-"


# ---- 1. hook overhead --------------------------------------------------------------------------------
def sec_overhead(cfg, tmp) -> dict:
    import peers_venv

    o = cfg["overhead"]
    args = ["--tokens", str(o["tokens"]), "--rounds", str(o["rounds"]), "--batches", "1", "16"]
    out = {}
    for arm, py, extra in (("project", PY, []), ("peers", None, ["--peers"])):
        if py is None:
            log("overhead: making sure bench/.peers-venv exists (python -m venv + pip, torch pinned by constraints.txt)")
            py = str(peers_venv.ensure(log=log))
        js = Path(tmp) / f"overhead-{arm}.json"
        cmd = [py, str(BENCH / "overhead.py"), *extra, *args, "--json", str(js)]
        log(f"overhead ({arm}): {' '.join(cmd[1:])}")
        subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
        out[arm] = json.loads(js.read_text())
        out[arm]["command"] = " ".join([rel(Path(cmd[0])) if "/" in cmd[0] else cmd[0]] + [rel(Path(cmd[1]))] + cmd[2:-2])
    return out


# ---- 2. candidate batching ---------------------------------------------------------------------------
def _model_and_vectors():
    from steeropt.engine.models import load_model
    from steeropt.engine.vectors import VectorSet, diff_in_means

    lm = load_model()
    read = lambda n: [l.strip() for l in (ROOT / "studies/data" / n).read_text().splitlines() if l.strip()]  # noqa: E731
    vs = VectorSet()
    vs.add(diff_in_means(lm, read("wedding_positive.txt"), read("wedding_neutral.txt"), 10, name="wedding"))
    return lm, vs


def sec_batching(cfg, tmp) -> dict:
    import engine

    from steeropt.engine.generation import Decoding, Generator
    from steeropt.types import InterventionPlan, Site

    b = cfg["batching"]
    lm, vs = _model_and_vectors()
    gen = Generator(lm, vs)
    prompts = [(f, json.loads(l)["prompt"]) for f in ("open_ended", "advice")
               for l in (ROOT / f"studies/data/{f}.jsonl").read_text().splitlines()[:1]][: b["prompts"]]
    ks = b["ks"]
    plans = [InterventionPlan([Site(10, "add", "wedding")], [0.02 * (i + 1)]) for i in range(max(ks))]
    gen.run(prompts[:1], plans[:1], Decoding(max_new_tokens=2))  # warm-up
    rows = engine.batching(gen, prompts, plans, Decoding(max_new_tokens=b["tokens"]), ks, log=log)
    return {"rows": rows, "alphas": [p.alphas[0] for p in plans], "layer": 10,
            "command": f"bench/run_all.py --sections batching (engine.batching: K plans x {len(prompts)} prompts, "
                       f"{b['tokens']} new tokens, one Generator.run vs K)"}


# ---- 3 + 4. the recorded grid --------------------------------------------------------------------------
def ensure_grid(cfg, force: bool) -> dict:
    if force or not GRID.exists():
        import quickstart_grid

        log(f"recording the quickstart dense grid ({cfg['grid_points']} α) -> {rel(GRID)}")
        data = quickstart_grid.record(cfg["grid_points"], log=log)
        GRID.write_text(json.dumps(data, indent=1, default=str))
    return json.loads(GRID.read_text())


def sec_optimizers(cfg, tmp, grid) -> dict:
    import optimizers

    o = cfg["optimizers"]
    res = optimizers.run(grid, o["seeds"], o["bo_seeds"], o["budget"], o["bo_budget"], log=log)
    res["command"] = (f"bench/optimizers.py --seeds {o['seeds']} --bo-seeds {o['bo_seeds']} --budget {o['budget']} "
                      f"--bo-budget {o['bo_budget']}  (on {rel(GRID)}, recorded by bench/quickstart_grid.py --points {grid['points']})")
    return res


def best_alpha(recs, family=None, threshold=0.4):
    """The α a user would deploy: the feasible (coherency >= threshold) α with the highest harmonic mean of
    concept and coherency; per family on that family's samples."""
    best = None
    for r in recs:
        v = r["families"].get(family) if family else {**r["objectives"], "scalar": r["scalar"]}
        if r["failed"] or v is None or v.get("coherency") is None or v.get("scalar") is None:
            continue
        if v["coherency"] >= threshold and (best is None or v["scalar"] > best[0]):
            best = (v["scalar"], r["alpha"])
    return None if best is None else best[1]


def sec_tiering(cfg, tmp, grid) -> dict:
    g, a = grid["gated"], grid["judge_all"]
    req_g = sum(r["counts"]["judge_requests"] for r in g)
    req_a = sum(r["counts"]["judge_requests"] for r in a)
    thr = next(c[2] for c in grid["constraints"] if c[0] == "coherency")
    fams = sorted({f for r in g for f in r["families"]})
    choice = {f: {"gated": best_alpha(g, f, thr), "judge_all": best_alpha(a, f, thr)} for f in fams}
    choice["all families"] = {"gated": best_alpha(g, None, thr), "judge_all": best_alpha(a, None, thr)}
    step = (grid["high"] - grid["low"]) / (grid["points"] - 1)
    return {"judge_requests_gated": req_g, "judge_requests_all": req_a, "saved_share": 1 - req_g / req_a,
            "samples": sum(r["counts"]["samples"] for r in g), "filtered": sum(r["counts"]["filtered"] for r in g),
            "audited": sum(r["counts"]["audited"] for r in g), "choice": choice, "grid_step": step,
            "same_choice": all(c["gated"] == c["judge_all"] for c in choice.values()),
            "max_choice_shift": max(abs((c["gated"] or 0) - (c["judge_all"] or 0)) for c in choice.values()),
            "per_alpha": [{"alpha": x["alpha"], "filtered": x["counts"]["filtered"], "req_gated": x["counts"]["judge_requests"],
                           "req_all": y["counts"]["judge_requests"], "gated": x["objectives"], "all": y["objectives"],
                           "feasible_gated": x["feasible"], "feasible_all": y["feasible"]} for x, y in zip(g, a)],
            "command": f"bench/quickstart_grid.py --points {grid['points']} (gated = objectives/quickstart.yaml, "
                       "judge-all = the same with gates: [])"}


def choose(recs, constraints, family):
    """The α a user would deploy for a family: among α whose values on that family's samples meet every
    constraint, the highest scalar (the objective's scalarization)."""
    ok = lambda v: all(v.get(n) is not None and (v[n] >= x if op == ">=" else v[n] <= x) for n, op, x in constraints)  # noqa: E731
    best = None
    for r in recs:
        v = r["families"].get(family)
        if r["failed"] or v is None or v.get("scalar") is None or not ok(v):
            continue
        if best is None or v["scalar"] > best[0]:
            best = (v["scalar"], r["alpha"])
    return None if best is None else best[1]


def sec_tiering_judged(cfg, tmp) -> dict:
    """The tiering goal re-measured on the three-axis judged objective (objectives/tiered-qwen.yaml): the same
    samples scored gated (gates, judge on survivors + audit) and judge-all; judge requests and chosen α."""
    import quickstart_grid

    points = cfg["judged_grid_points"]
    if not JUDGED_GRID.exists() or json.loads(JUDGED_GRID.read_text()).get("points") != points:
        log(f"recording the judged grid ({points} α, studies/quickstart-qwen.yaml) -> {rel(JUDGED_GRID)}")
        data = quickstart_grid.record(points, log=log, spec=ROOT / "studies/quickstart-qwen.yaml")
        JUDGED_GRID.write_text(json.dumps(data, indent=1, default=str))
    grid = json.loads(JUDGED_GRID.read_text())
    g, a = grid["gated"], grid["judge_all"]
    req_g = sum(r["counts"]["judge_requests"] for r in g)
    req_a = sum(r["counts"]["judge_requests"] for r in a)
    cons = [tuple(c) for c in grid["constraints"]]
    fams = sorted({f for r in g for f in r["families"]})
    choice = {f: {"gated": choose(g, cons, f), "judge_all": choose(a, cons, f)} for f in fams}
    step = (grid["high"] - grid["low"]) / (grid["points"] - 1)
    shift = max(abs((c["gated"] or 0) - (c["judge_all"] or 0)) for c in choice.values())
    return {"judge_requests_gated": req_g, "judge_requests_all": req_a, "saved_share": 1 - req_g / req_a,
            "samples": sum(r["counts"]["samples"] for r in g), "filtered": sum(r["counts"]["filtered"] for r in g),
            "audited": sum(r["counts"]["audited"] for r in g), "choice": choice, "grid_step": step,
            "same_choice": all(c["gated"] == c["judge_all"] for c in choice.values()), "max_choice_shift": shift,
            "constraints": cons, "judge": grid["judge"], "seconds": grid["seconds"],
            "command": f"bench/quickstart_grid.py --spec studies/quickstart-qwen.yaml --points {grid['points']} "
                       "(gated = objectives/tiered-qwen.yaml, judge-all = the same with gates: [])"}


def sec_speed(cfg, tmp) -> dict:
    """bench/speed.py in its own process, twice. First the 135M's generation arms (two model copies), then the
    quickstart (studies/quickstart.yaml: the 1.5B steered and judging), then the 1.5B judge on that run's own trial
    samples; then the 1.5B's generation arms, plain and fast side by side (under "qwen1p5b")."""

    def run(key):
        js = Path(tmp) / f"{key}.json"
        cmd = [PY, str(BENCH / "speed.py"), *cfg[key], "--json", str(js)]
        log(f"speed: {' '.join(cmd[1:])}")
        subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
        res = json.loads(js.read_text())
        res["command"] = "python bench/speed.py" + "".join(f" {a}" for a in cfg[key])
        return res

    return run("speed") | {"qwen1p5b": run("speed_1p5b")}


def headline(r: dict) -> dict:
    """The report's top-level speed keys: the speed section's one run, and the judged tiering beside it."""
    sp = r.get("speed", {}).get("result") or {}
    gen, judge, qs = sp.get("gen", {}), sp.get("judge", {}), sp.get("quickstart", {})
    demo = sp.get("quickstart_135m", {})
    big = sp.get("qwen1p5b", {})
    tj = r.get("tiering_judged", {}).get("result") or {}
    b16 = big.get("gen", {}).get("b16", {})
    return {"judge_samples_per_s_plain": judge.get("plain_samples_per_s"),
            "judge_samples_per_s_fast": judge.get("fast_samples_per_s"),
            "gen_tokens_per_s_b16": gen.get("b16", {}).get("fast_tokens_per_s"),
            "gen_tokens_per_s_b64": gen.get("b64", {}).get("fast_tokens_per_s"),
            "gen_limit_tokens_per_s": sp.get("limit", {}).get("tokens_per_s"),
            "gen_tokens_per_s_b16_1p5b": b16.get("fast_tokens_per_s"),
            "gen_plain_tokens_per_s_b16_1p5b": b16.get("plain_tokens_per_s"),
            "gen_limit_tokens_per_s_1p5b": big.get("limit", {}).get("tokens_per_s"),
            "cheap_tier_share": qs["split_s"]["cheap tier"] / qs["wall_s"] if qs else None,
            "cheap_tier_share_135m": demo["split_s"]["cheap tier"] / demo["wall_s"] if demo else None,
            "tiering_saved_share": tj.get("saved_share"), "tiering_same_pick": tj.get("same_choice"),
            "quickstart_wall_s": qs.get("wall_s"),
            "quickstart_peak_rss_mib": qs["peak_rss_bytes"] / 2**20 if qs.get("peak_rss_bytes") else None}


# ---- 5. memory -----------------------------------------------------------------------------------------
def sec_memory(cfg, tmp) -> dict:
    from steeropt.engine.models import load_model
    from steeropt.engine.models.loading import embedded_gguf_path

    n = cfg["memory"]["trials"]
    lm = load_model()
    weight_bytes = sum(p.numel() * p.element_size() for p in lm.model.parameters())
    gguf_bytes = embedded_gguf_path().stat().st_size
    steeropt_bin = str(Path(PY).parent / "steeropt")

    def peak(cmd, cwd):
        code = ("import resource, subprocess, sys, time; t = time.perf_counter(); "
                f"r = subprocess.run({cmd!r}, cwd={str(cwd)!r}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True); "
                "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, time.perf_counter() - t, r.returncode); "
                "sys.stderr.write(r.stderr[-2000:] if r.returncode else '')")
        p = subprocess.run([PY, "-c", code], capture_output=True, text=True, check=True)
        kb, secs, rc = p.stdout.split()
        if int(rc):
            raise RuntimeError(f"{cmd} failed: {p.stderr}")
        return int(kb) * 1024, float(secs)

    d = Path(tempfile.mkdtemp(dir=tmp))
    cmd = [steeropt_bin, "run", str(ROOT / "studies/demo-135m.yaml"), "--trials", str(n)]
    log(f"memory: {' '.join(cmd)} (in a temp dir)")
    rss, secs = peak(cmd, d)
    base, _ = peak([PY, "-c", "import torch, transformers"], d)
    model_only, _ = peak([PY, "-c", "from steeropt.engine.models import load_model; load_model()"], d)
    return {"trials": n, "peak_rss_bytes": rss, "seconds": secs, "weight_bytes_fp32": weight_bytes, "gguf_bytes": gguf_bytes,
            "peak_over_weights": rss / weight_bytes, "peak_over_gguf": rss / gguf_bytes,
            "python_torch_transformers_rss_bytes": base, "load_model_rss_bytes": model_only,
            "study_over_loaded_model": rss / model_only,
            "command": f"steeropt run studies/demo-135m.yaml --trials {n}  (peak RSS via getrusage(RUSAGE_CHILDREN))"}


# ---- 6. scaling ----------------------------------------------------------------------------------------
def sec_scaling(cfg, tmp) -> dict:
    from steeropt.engine.generation import Decoding
    from steeropt.runner.harness import Harness
    from steeropt.specs import build
    from steeropt.specs.prompts import trial_prompts
    from steeropt.types import InterventionPlan, Site

    s = cfg["scaling"]
    cwd = os.getcwd()
    os.chdir(tmp)
    try:
        spec = build("study", str(ROOT / "studies/demo-135m.yaml"))
        # No judge cache: repeated rounds must pay for their judge calls like a fresh trial batch does.
        h = Harness(spec).load(judge_cache=None)
        unsteered = [InterventionPlan([], [])]
        alphas = [0.1, 0.2, 0.3, 0.4]  # one trial batch = the quickstart's batch_size of 4 candidates
        layers_all = [10, 12, 14, 16]

        def measure(n_prompts, tokens, n_sites):
            sp = spec.model_copy(update={"budget": spec.budget.model_copy(update={"prompts_per_trial": n_prompts})})
            prompts = trial_prompts(sp)
            dec = Decoding(**(spec.decoding.model_dump() | {"max_new_tokens": tokens}))
            baseline = h.generate(prompts, unsteered, decoding=dec)  # once per study, not per trial batch
            plans = [InterventionPlan([Site(l, "add", "wedding") for l in layers_all[:n_sites]], [a] * n_sites)
                     for a in alphas]
            calls0 = h.judge.stats.calls
            t = time.perf_counter()
            res = h.evaluate(h.generate(prompts, plans, decoding=dec), plans, baseline)
            dt = time.perf_counter() - t
            row = {"prompts": len(prompts), "new_tokens": tokens, "sites": n_sites, "seconds": dt,
                   "judge_requests": sum(r.counts["judge_requests"] for r in res),
                   "judge_calls": h.judge.stats.calls - calls0, "load": os.getloadavg()[0]}
            log(f"  scaling: {row}")
            return row

        p0, t0, s0 = s["base"]
        warm = [InterventionPlan([Site(10, "add", "wedding")], [0.1])]
        h.evaluate(h.generate(h.prompts, warm), warm, h.generate(h.prompts, unsteered))  # warm-up
        # Interleaved rounds, best time per setting: the load on a shared machine drifts over minutes.
        settings = [(p0, t0, s0)] + [(p, t0, s0) for p in s["prompts"]] + [(p0, t, s0) for t in s["tokens"]] \
            + [(p0, t0, n) for n in s["sites"]]
        settings = list(dict.fromkeys(settings))
        best = {}
        for rnd in range(s.get("rounds", 2)):
            for st in (settings if rnd % 2 == 0 else settings[::-1]):
                row = measure(*st)
                if st not in best or row["seconds"] < best[st]["seconds"]:
                    best[st] = row | {"all_seconds": best.get(st, {}).get("all_seconds", []) + [row["seconds"]]}
                else:
                    best[st]["all_seconds"].append(row["seconds"])
        rows = {"base": best[(p0, t0, s0)], "prompts": [best[(p, t0, s0)] for p in s["prompts"]],
                "tokens": [best[(p0, t, s0)] for t in s["tokens"]], "sites": [best[(p0, t0, n)] for n in s["sites"]]}
        h.close()
    finally:
        os.chdir(cwd)
    return {"rows": rows, "rounds": s.get("rounds", 2), "candidates_per_batch": len(alphas), "judge": "local-default (in process, no judge cache)",
            "command": "bench/run_all.py --sections scaling (Study.setup() on studies/demo-135m.yaml, then "
                       "Harness.evaluate(generate(4 plans), baseline) per setting; sites = add at layers 10,12,14,16)"}


# ---- report --------------------------------------------------------------------------------------------
def fmt(x, nd=2):
    return "–" if x is None else (f"{x:.{nd}f}" if isinstance(x, float) else str(x))


def goals(r) -> list[dict]:
    """(figure, goal, result, met, how much missed) rows: the README's results table."""
    rows = []
    ov = r.get("overhead", {}).get("result")
    if ov:
        for t in ov["project"]["throughput"]:
            v = t["ratio_vs_unsteered"]["steeropt"]
            rows.append({"figure": f"steered / unsteered tokens/s, batch {t['batch']}", "goal": "≥ 0.95", "value": v,
                         "result": f"{v:.3f}", "met": v >= 0.95, "miss": None if v >= 0.95 else f"{0.95 - v:.3f} short",
                         "command": ov["project"]["command"]})
        for t in ov["peers"]["throughput"]:
            for p in ("steering_vectors", "repeng"):
                v = t["steeropt_over_peer"][p]
                rows.append({"figure": f"steeropt / {p.replace('_', '-')} tokens/s, batch {t['batch']}", "goal": "≥ 1.0",
                             "value": v, "result": f"{v:.3f}", "met": v >= 1.0,
                             "miss": None if v >= 1.0 else f"{1.0 - v:.3f} short", "command": ov["peers"]["command"]})
        ops = ov["peers"]["ops"]
        rows.append({"figure": "extra tensor ops per steered layer call (aten, decode step)", "goal": "a few (peers 12-15)",
                     "result": ", ".join(f"{k.replace('_', '-')} {ops[k]['aten_decode']}" for k in ("steeropt", "steering_vectors", "repeng")),
                     "met": ops["steeropt"]["aten_decode"] <= 3, "miss": None, "command": ov["peers"]["command"]})
    bt = r.get("batching", {}).get("result")
    if bt:
        rows.append({"figure": "batched / sequential speedup, K candidates", "goal": "K=8 ≥ 3x",
                     "result": ", ".join(f"K={x['k']}: {x['speedup']:.2f}x" for x in bt["rows"]),
                     "met": next((x["speedup"] >= 3 for x in bt["rows"] if x["k"] == 8), None),
                     "miss": next((f"{3 - x['speedup']:.2f}x short" for x in bt["rows"] if x["k"] == 8 and x["speedup"] < 3), None),
                     "command": bt["command"]})
    op = r.get("optimizers", {}).get("result")
    if op:
        sm, n = op["summary"], op["dense_points"]
        for k, v in sm.items():
            med = v["median"]
            val = "not reached" if med == float("inf") else f"{med:g} ({med / n:.0%})"
            spread = f"{fmt(v['min'], 0)}–{fmt(v['max'], 0)}".replace("inf", "n/r")
            goal = "≤ 25% of dense grid" if k == "botorch" else "–"
            met = (med <= 0.25 * n) if k == "botorch" else None
            rows.append({"figure": f"evaluations to 95% of dense-grid HV: {k} ({v['seeds']} seeds, budget {v['budget']})",
                         "goal": goal, "result": f"{val}, range {spread}, reached {v['reached_share']:.0%}", "met": met,
                         "miss": None if met in (True, None) else f"{med - 0.25 * n:g} evaluations over", "command": op["command"]})
    ti = r.get("tiering", {}).get("result")
    if ti:
        rows += tiering_rows(ti, "quickstart", "")
    me = r.get("memory", {}).get("result")
    if me:
        rows.append({"figure": "peak RSS of a quickstart study / fp32 weight size", "goal": "–",
                     "result": f"{me['peak_over_weights']:.2f}x ({me['peak_rss_bytes'] / 2**20:.0f} MiB / {me['weight_bytes_fp32'] / 2**20:.0f} MiB)",
                     "met": None, "miss": None, "command": me["command"]})
    sc = r.get("scaling", {}).get("result")
    if sc:
        b = sc["rows"]["base"]["seconds"]
        for dim in ("prompts", "tokens", "sites"):
            key = {"prompts": "prompts", "tokens": "new_tokens", "sites": "sites"}[dim]
            rows.append({"figure": f"trial-batch time vs {dim} (ratio to base)", "goal": "–",
                         "result": ", ".join(f"{x[key]}: {x['seconds'] / b:.2f}" for x in sc["rows"][dim]),
                         "met": None, "miss": None, "command": sc["command"]})
    sp = r.get("speed", {}).get("result")
    for model, part, share in (("135M", sp, 0.45), ("1.5B", (sp or {}).get("qwen1p5b"), 0.40)):
        if not (part and part.get("gen")):
            continue
        g, lim = part["gen"], part.get("limit", {}).get("tokens_per_s")
        for key in ("b16", "b64"):
            x = g.get(key)
            if not x:
                continue
            goal = "≥ 2x plain" if key == "b16" else "–"
            met = x["speedup"] >= 2 if key == "b16" else None
            rows.append({"figure": f"{model} generation tokens/s, batch {x['rows']}: fast / plain `generate`", "goal": goal,
                         "result": f"{x['fast_tokens_per_s']:.0f} vs {x['plain_tokens_per_s']:.0f} = {x['speedup']:.2f}x, "
                                   f"identical rows {x['identical_rows']}/{x['rows']}",
                         "met": met, "miss": None if met in (True, None) else f"{2 - x['speedup']:.2f}x short",
                         "command": part["command"]})
            if lim:
                v = x["fast_tokens_per_s"] / lim
                rows.append({"figure": f"{model} fast tokens/s at batch {x['rows']} / compute limit",
                             "goal": f"≥ {share:.0%}" if key == "b16" else "–",
                             "result": f"{v:.0%} of {lim:.0f} tokens/s", "met": v >= share if key == "b16" else None,
                             "miss": None if key != "b16" or v >= share else f"{share - v:.0%} short", "command": part["command"]})
        v = g["steered"]["steered_over_unsteered"]
        rows.append({"figure": f"{model} steered / unsteered tokens/s on the fast path, batch 16", "goal": "≥ 0.95",
                     "result": f"{v:.3f}", "met": v >= 0.95, "miss": None if v >= 0.95 else f"{0.95 - v:.3f} short",
                     "command": part["command"]})
    if sp and sp.get("batching"):
        k8 = next(x for x in sp["batching"] if x["k"] == 8)
        rows.append({"figure": "batched / sequential speedup on the fast path, K=8", "goal": "≥ 3x", "result": f"{k8['speedup']:.2f}x",
                     "met": k8["speedup"] >= 3, "miss": None if k8["speedup"] >= 3 else f"{3 - k8['speedup']:.2f}x short",
                     "command": sp["command"]})
    if sp and sp.get("judge"):
        j = sp["judge"]
        rows.append({"figure": f"judge samples/s, prefix-cached batched / plain per-call ({j['judge']})", "goal": "≥ 3x",
                     "result": f"{j['fast_samples_per_s']:.3f} vs {j['plain_samples_per_s']:.3f} = {j['ratio']:.2f}x",
                     "met": j["ratio"] >= 3, "miss": None if j["ratio"] >= 3 else f"{3 - j['ratio']:.2f}x short", "command": j["command"]})
        v = j["fast_samples_per_s"]
        # a sample = one answer on every rubric; runs before 2026-12-06 counted requests as samples
        per = f", {j['fast_requests_per_s']:.2f} requests/s" if "fast_requests_per_s" in j else " (requests/s: old count)"
        rows.append({"figure": f"judge samples/s, {len(j['rubrics'])} rubrics each ({j['judge']}, {j.get('items', 'labelled items')})",
                     "goal": "≥ 2", "result": f"{v:.3f}{per}", "met": v >= 2,
                     "miss": None if v >= 2 else f"{2 - v:.2f} short", "command": j["command"]})
    if sp and sp.get("quickstart"):
        q = sp["quickstart"]
        rows.append({"figure": "quickstart wall time (set-up check + steeropt run)", "goal": "≤ 15 min",
                     "result": f"{q['wall_s']:.0f} s (" + ", ".join(f"{k.split(' (')[0]} {v:.0f}" for k, v in q["split_s"].items()) + ")",
                     "met": q["wall_s"] <= 900, "miss": None if q["wall_s"] <= 900 else f"{(q['wall_s'] - 900) / 60:.1f} min over",
                     "command": q["command"]})
        for key, what in (("quickstart", "the quickstart (1.5B)"), ("quickstart_135m", "the 135M demo")):
            x = sp.get(key)
            if x:
                v = x["split_s"]["cheap tier"] / x["wall_s"]
                rows.append({"figure": f"cheap tier's share of {what}'s wall time", "goal": "≤ 25%",
                             "result": f"{v:.0%} ({x['split_s']['cheap tier']:.0f} of {x['wall_s']:.0f} s)",
                             "met": v <= 0.25, "miss": None if v <= 0.25 else f"{v - 0.25:.0%} over", "command": x["command"]})
        if q.get("peak_rss_bytes"):
            rows.append({"figure": "quickstart peak RSS", "goal": "–", "result": f"{q['peak_rss_bytes'] / 2**20:.0f} MiB",
                         "met": None, "miss": None, "command": q["command"]})
    tj = r.get("tiering_judged", {}).get("result")
    if tj:
        rows += tiering_rows(tj, "three-axis judged objective", " (three-axis judged objective)")
    return rows


def tiering_rows(t: dict, saved_label: str, choice_label: str) -> list[dict]:
    """The two tiering goals: judge requests saved by the gates, and the same chosen α per family."""
    return [{"figure": f"judge calls saved by the cheap tier ({saved_label})", "goal": "≥ 50%",
             "result": f"{t['saved_share']:.1%} ({t['judge_requests_gated']}/{t['judge_requests_all']})",
             "met": t["saved_share"] >= 0.5, "miss": None if t["saved_share"] >= 0.5 else f"{0.5 - t['saved_share']:.1%} short",
             "command": t["command"]},
            {"figure": f"chosen α per family, gated vs judge-all{choice_label}", "goal": "same",
             "result": "; ".join(f"{f}: {fmt(c['gated'], 3)} vs {fmt(c['judge_all'], 3)}" for f, c in t["choice"].items()),
             "met": t["same_choice"], "miss": None if t["same_choice"] else f"up to {t['max_choice_shift']:.3f} α apart "
             f"({t['max_choice_shift'] / t['grid_step']:.0f} grid steps)", "command": t["command"]}]


def write_report(r: dict) -> None:
    r |= headline(r)
    r["goals"] = goals(r)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "report.json").write_text(json.dumps(r, indent=1, default=lambda o: None if o != o else str(o)))
    m = r["machine"]
    L = [f"# steeropt benchmarks", "",
         f"Generated by `{r['command']}` on {r['date']} ({'quick' if r['quick'] else 'full'} sizes). "
         + ("Sections were run by: " + "; ".join(f"`{c}`" for c in dict.fromkeys(
             r[n].get("invocation", r["command"]) for n in SECTIONS if n in r)) + " (each section names its own run)."
            if len({r[n].get("invocation") for n in SECTIONS if n in r}) > 1 else ""), "",
         f"Machine: {m['cores']} cores ({m['cpu']}), CPU only (CUDA {'available' if m['cuda'] else 'not available'}), "
         f"{m['memory_gb']} GB RAM, {m['platform']}. Shared with other jobs: load average (1 min) per section below; "
         "every figure is a ratio of arms measured side by side in the same run. "
         f"torch threads per process: {r.get('threads')} (1 when the load exceeds the cores: see run_all.py --threads).", "",
         "Versions: " + ", ".join(f"{k} {v}" for k, v in m["versions"].items()) + ".", ""]
    ov = r.get("overhead", {}).get("result")
    if ov:
        L.append("Peers: " + ", ".join(f"{k} {v}" for k, v in ov["peers"]["versions"].items())
                 + " in bench/.peers-venv (transformers overridden to the project's version; see bench/peers_venv.py).")
        L.append("")
    L += ["## Results", "", "| figure | goal | result | met |", "|---|---|---|---|"]
    for g in r["goals"]:
        met = "–" if g["met"] is None else ("yes" if g["met"] else f"**no** ({g['miss']})" if g["miss"] else "**no**")
        L.append(f"| {g['figure']} | {g['goal']} | {g['result']} | {met} |")
    L.append("")
    for name in SECTIONS:
        s = r.get(name)
        if not s:
            continue
        L += [f"## {name}", "", f"Run by `{s.get('invocation', r['command'])}` ({s.get('date', r['date'])}, torch threads "
              f"{s.get('threads', '?')}); load average at start/end: {s['load'][0]:.1f} / {s['load'][1]:.1f}; "
              f"{s['seconds']:.0f} s.", ""]
        if s.get("error"):
            L += [f"**failed**: `{s['error']}`", ""]
            continue
        res = s["result"]
        if res.get("command"):
            L += [f"command: `{res['command']}`", ""]
        L += SECTION_MD[name](res) + [""]
    (RESULTS / "report.md").write_text("\n".join(L))


def md_overhead(res):
    L = []
    for arm in ("project", "peers"):
        x = res[arm]
        L += [f"### {arm} environment (transformers {x['versions']['transformers']}): `{x['command']}`", "",
              "| batch | arm | tokens/s | / unsteered | median paired ratio |", "|---|---|---|---|---|"]
        for t in x["throughput"]:
            for n, v in t["tok_s"].items():
                L.append(f"| {t['batch']} | {n} | {v:.1f} | {t['ratio_vs_unsteered'].get(n, 1.0):.3f} | "
                         f"{t['paired_ratio_vs_unsteered_median'].get(n, 1.0):.3f} |")
            if "same_tokens_as_steeropt" in t:
                same = ", ".join(f"{k.replace('_', '-')}: {'yes' if v else 'NO'}" for k, v in t["same_tokens_as_steeropt"].items())
                L.append(f"| {t['batch']} | same greedy tokens as steeropt | {same} | | |")
        L.append("")
    ops = res["peers"]["ops"]
    L += ["Extra tensor operations inside one call of the steered layer (steered minus unsteered; the unsteered "
          f"layer runs {ops['unsteered_layer_ops']['aten']['decode']} aten ops per decode step):", "",
          "| library | aten ops (prefill / decode) | torch-function calls (prefill / decode) | aten ops added (decode) |",
          "|---|---|---|---|"]
    for k in ("steeropt", "steering_vectors", "repeng"):
        o = ops[k]
        L.append(f"| {k} | {o['aten_prefill']} / {o['aten_decode']} | {o['torch_function_prefill']} / {o['torch_function_decode']} | "
                 + ", ".join(f"{a}×{n}" for a, n in o["aten_decode_ops"].items()) + " |")
    L += ["", "steeropt also runs a pre-hook on the base model per forward (it reads the KV-cache length: no tensor op)."]
    return L


def md_batching(res):
    L = ["| K candidates | batched s | sequential s | speedup |", "|---|---|---|---|"]
    L += [f"| {x['k']} | {x['batched_s']:.1f} | {x['sequential_s']:.1f} | {x['speedup']:.2f}x |" for x in res["rows"]]
    return L


def md_optimizers(res):
    L = [f"Dense grid: {res['dense_points']} α, hypervolume {res['dense_hv']:.4f}; target {res['target_share']:.0%} of it. "
         f"Lookup: {res['lookup']}; batches of {res['batch']}.", "",
         "| optimizer | seeds | budget | evaluations to target per seed | median | share of dense grid | median final HV share | mean ask time s |",
         "|---|---|---|---|---|---|---|---|"]
    for k, v in res["summary"].items():
        share = "–" if v["median"] == float("inf") else f"{v['median_share_of_dense_grid']:.0%}"
        L.append(f"| {k} | {v['seeds']} | {v['budget']} | {', '.join('n/r' if x is None else str(x) for x in v['reached_at'])} | "
                 f"{'n/r' if v['median'] == float('inf') else v['median']} | "
                 f"{share} | "
                 f"{v['median_final_hv_share']:.3f} | {fmt(v['mean_ask_fit_seconds'], 1)} |")
    L += ["", "n/r = not reached within the budget. The 14-factor grid (AxBench) stops after its 14 points."]
    return L


def md_tiering(res):
    L = [f"{res['samples']} samples, {res['filtered']} filtered by the gates, {res['audited']} of those audited by the judge. "
         f"Judge requests: gated {res['judge_requests_gated']} vs judge-all {res['judge_requests_all']} "
         f"→ {res['saved_share']:.1%} saved.", "",
         "Chosen α (feasible, highest harmonic mean of concept and coherency):", "",
         "| family | gated | judge-all |", "|---|---|---|"]
    L += [f"| {f} | {fmt(c['gated'], 3)} | {fmt(c['judge_all'], 3)} |" for f, c in res["choice"].items()]
    L += ["", "| α | filtered | requests gated / all | concept, coherency gated | concept, coherency all |", "|---|---|---|---|---|"]
    for x in res["per_alpha"]:
        g, a = x["gated"], x["all"]
        L.append(f"| {x['alpha']:.3f} | {x['filtered']} | {x['req_gated']} / {x['req_all']} | "
                 f"{fmt(g.get('concept'))}, {fmt(g.get('coherency'))} | {fmt(a.get('concept'))}, {fmt(a.get('coherency'))} |")
    return L


def md_memory(res):
    mb = lambda b: f"{b / 2**20:.0f} MiB"  # noqa: E731
    return [f"| quantity | value |", "|---|---|",
            f"| peak RSS, `steeropt run` ({res['trials']} trials, {res['seconds']:.0f} s) | {mb(res['peak_rss_bytes'])} |",
            f"| model weights as loaded (fp32) | {mb(res['weight_bytes_fp32'])} |",
            f"| GGUF file (Q4_1) | {mb(res['gguf_bytes'])} |",
            f"| python + torch + transformers imported | {mb(res['python_torch_transformers_rss_bytes'])} |",
            f"| python + load_model() | {mb(res['load_model_rss_bytes'])} |",
            f"| peak / fp32 weights | {res['peak_over_weights']:.2f}x |",
            f"| peak / GGUF file | {res['peak_over_gguf']:.2f}x |",
            f"| peak / (process with the model loaded) | {res['study_over_loaded_model']:.2f}x |"]


def md_scaling(res):
    b = res["rows"]["base"]
    L = [f"One trial batch = {res['candidates_per_batch']} candidates × prompts, generated in one call and scored "
         f"(tier 1 + gates + judge {res['judge']}). Base: {b['prompts']} prompts, {b['new_tokens']} new tokens, "
         f"{b['sites']} site = {b['seconds']:.1f} s. Best of {res.get('rounds', 1)} interleaved rounds (all times per setting in "
         "report.json); a single-shot sequence is confounded by the load drifting over minutes.", "",
         "| varied | prompts | new tokens | sites | seconds | ratio to base | judge requests | load |", "|---|---|---|---|---|---|---|---|"]
    for dim in ("prompts", "tokens", "sites"):
        for x in res["rows"][dim]:
            L.append(f"| {dim} | {x['prompts']} | {x['new_tokens']} | {x['sites']} | {x['seconds']:.1f} | "
                     f"{x['seconds'] / b['seconds']:.2f} | {x['judge_requests']} | {x['load']:.1f} |")
    L += ["", "Judge work follows the samples that pass the gates: longer completions and more steered sites collapse more "
          "text, so fewer samples reach the judge (see the judge requests column) and those rows are not pure "
          "generation scaling. Generation alone grows about linearly with prompts × candidates and with new tokens."]
    return L


def md_speed(res):
    L = []
    lim = res.get("limit")
    if lim:
        L += [f"Compute limit: a {2048}² fp32 matmul runs at {lim['matmul_gflops']:.0f} GFLOP/s here; one decoded token "
              f"costs {lim['flops_per_token'] / 1e9:.3f} GFLOP (2 × the Linear weights + attention over {lim['context']} "
              f"positions) → {lim['tokens_per_s']:.0f} tokens/s if decoding ran at matmul speed.", ""]
    gen = res.get("gen")
    if gen:
        L += ["| rows (candidates × prompts) | plain tokens/s | fast tokens/s | fast / plain | fast / limit | identical rows |",
              "|---|---|---|---|---|---|"]
        for key in ("b16", "b64"):
            if key not in gen:
                continue
            g = gen[key]
            L.append(f"| {g['rows']} ({g['candidates']} × {g['prompts']}) | {g['plain_tokens_per_s']:.0f} | "
                     f"{g['fast_tokens_per_s']:.0f} | {g['speedup']:.2f}x | "
                     f"{g['fast_tokens_per_s'] / lim['tokens_per_s']:.0%} | {g['identical_rows']}/{g['rows']} |" if lim else "")
        L += ["", f"plain = transformers `generate`, dynamic KV cache, unpacked weights; fast = the Generator's default "
              f"(engine/fastpath.py: oneDNN-prepacked fp32 weights, fused q/k/v and gate/up, static KV cache, the "
              f"shared chat-template prefix once per plan). Greedy, {gen['b16']['new_tokens']} new tokens. "
              f"Steered / unsteered (fast, batch {gen['steered']['batch']}): {gen['steered']['steered_over_unsteered']:.3f}.", ""]
    bd = res.get("breakdown")
    if bd:
        cats = list(bd["fast"]["share"])
        L += ["Where one batch-16 generate call's time goes (torch profiler self time; 'no op' = wall time no op accounts for):", "",
              "| part | " + " | ".join(bd) + " |", "|---|" + "---|" * len(bd)]
        L += [f"| {c} | " + " | ".join(f"{b['share'][c]:.0%} ({b['seconds'][c]:.2f} s)" for b in bd.values()) + " |" for c in cats]
        L += ["| prompt forward (prefill), included above | " + " | ".join(f"{b['prefill_s']:.2f} s" for b in bd.values()) + " |",
              "| wall | " + " | ".join(f"{b['wall_s']:.2f} s" for b in bd.values()) + " |", ""]
    if res.get("batching"):
        L += ["K-candidate batching on the fast path (K plans × 2 prompts, 32 new tokens, one call vs K calls): "
              + ", ".join(f"K={x['k']}: {x['speedup']:.2f}x" for x in res["batching"]) + ".", ""]
    q8 = res.get("int8")
    if q8:
        L += [f"int8 probe (PyTorch dynamic int8 Linear, not offered): {q8['tokens_per_s']:.0f} tokens/s on {q8['rows']} rows, "
              f"greedy tokens identical to fp32 in {q8['identical_rows']}/{q8['rows']} rows, "
              f"{q8['diverged_at_first_token']} diverge at the first token.", ""]
    j = res.get("judge")
    if j:
        plain_n = f" (plain arm on the first {j['plain_samples']})" if j.get("plain_samples", j["samples"]) < j["samples"] else ""
        L += [f"Judge `{j['judge']}` ({j['model']}), {j['samples']} samples of {j.get('items', 'labelled items')}{plain_n}, "
              f"each judged on {', '.join(j['rubrics'])}, torch threads {j['threads']}: "
              f"plain per-call {j['plain_samples_per_s']:.3f} samples/s, prefix-cached batched {j['fast_samples_per_s']:.3f} "
              f"samples/s = {j['ratio']:.2f}x" + (f" ({j['fast_requests_per_s']:.2f} requests/s)" if "fast_requests_per_s" in j else "")
              + f"; max |P(yes) gap| {j['max_abs_p_yes_gap']:.1e}. `{j['command']}`", ""]
    q = res.get("quickstart")
    if q:
        L += [f"Quickstart wall time ({q['command']}): {q['wall_s']:.0f} s", "", "| part | seconds | share |", "|---|---|---|"]
        L += [f"| {k} | {v:.1f} | {v / q['wall_s']:.0%} |" for k, v in q["split_s"].items()]
        t = q["timing"]
        L += ["", f"Judge requests {t['judge_requests']}, spared by the cheap tier {t['judge_requests_spared']} "
              f"(the quickstart's objective has {'no judge' if not t['rubrics'] else 'rubrics ' + ', '.join(t['rubrics'])})."]
        d = res.get("quickstart_135m")
        if d:
            L += ["", f"The 135M demo in the same run ({d['command']}): {d['wall_s']:.0f} s — "
                  + ", ".join(f"{k.split(' (')[0]} {v:.0f} s ({v / d['wall_s']:.0%})" for k, v in d["split_s"].items()) + "."]
        qp = res.get("quickstart_plain")
        if qp:
            L += ["", f"The same run with `STEEROPT_FAST=0` (transformers' plain `generate`): {qp['wall_s']:.0f} s, of which "
                  f"generation {qp['split_s']['generation']:.0f} s (fast path: {q['split_s']['generation']:.0f} s)."]
    big = res.get("qwen1p5b")
    if big:
        when = f", run {big['date']} on its own, load {big['load'][0]:.1f} / {big['load'][1]:.1f}" if big.get("date") else ""
        L += ["", f"### Qwen2.5-Coder-1.5B-Instruct, the quickstart's model (`{big['command']}`{when})", ""] + md_speed(big)
    return L


def md_tiering_judged(res):
    L = [f"Objective objectives/tiered-qwen.yaml (judge {res['judge']}), constraints "
         + ", ".join(f"{n} {op} {v}" for n, op, v in res["constraints"]) + ". "
         f"{res['samples']} samples, {res['filtered']} filtered, {res['audited']} audited. Judge requests: gated "
         f"{res['judge_requests_gated']} vs judge-all {res['judge_requests_all']} → {res['saved_share']:.1%} saved.", "",
         "Chosen α per family (constraints met on the family's samples, highest harmonic mean):", "",
         "| family | gated | judge-all |", "|---|---|---|"]
    L += [f"| {f} | {fmt(c['gated'], 3)} | {fmt(c['judge_all'], 3)} |" for f, c in res["choice"].items()]
    return L


SECTION_MD = {"overhead": md_overhead, "batching": md_batching, "optimizers": md_optimizers, "tiering": md_tiering,
              "memory": md_memory, "scaling": md_scaling, "speed": md_speed, "tiering_judged": md_tiering_judged}


def rewrite() -> None:
    """Re-render report.md from report.json (no benchmark is run)."""
    write_report(json.loads((RESULTS / "report.json").read_text()))


def main():
    if sys.argv[1:] == ["--render"]:
        return rewrite()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--sections", default=",".join(SECTIONS))
    ap.add_argument("--record", action="store_true", help="re-record bench/data/quickstart_grid.json")
    ap.add_argument("--keep-quickstart", metavar="DIR", help="speed: run the quickstart in this new folder and keep it")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch threads for every process (default: 1 when the 1-min load exceeds the cores, else the cores)")
    args = ap.parse_args()
    cores = os.cpu_count() or 1
    # Oversubscribed cores make torch's 2 threads spin against each other: measured here at load ~10 on 2
    # cores, 8 new tokens x 4 rows took 4.6-8 s with 1 thread and 20-28 s with 2. Set before torch loads;
    # subprocesses (overhead, memory) inherit it.
    threads = args.threads or (1 if os.getloadavg()[0] > cores else cores)
    os.environ["OMP_NUM_THREADS"] = str(threads)
    sys.path.insert(0, str(BENCH))
    cfg = dict(QUICK if args.quick else FULL)
    if args.keep_quickstart:
        cfg["speed"] = [*cfg["speed"], "--keep-quickstart", str(Path(args.keep_quickstart).resolve())]
    wanted = [s.strip() for s in args.sections.split(",") if s.strip()]
    bad = [s for s in wanted if s not in SECTIONS]
    if bad:
        raise SystemExit(f"unknown sections {bad}; choose from {SECTIONS}")
    old = RESULTS / "report.json"
    r = json.loads(old.read_text()) if old.exists() and set(wanted) != set(SECTIONS) else {}
    r |= {"command": "python bench/run_all.py" + (" --quick" if args.quick else "")
          + (f" --sections {args.sections}" if set(wanted) != set(SECTIONS) else ""),
          "date": time.strftime("%Y-%m-%d %H:%M"), "quick": args.quick, "machine": machine(), "threads": threads}
    with tempfile.TemporaryDirectory() as tmp:
        grid = None
        for name in wanted:
            start, l0 = time.perf_counter(), os.getloadavg()[0]
            log(f"== {name}")
            try:
                if name in ("optimizers", "tiering"):  # tiering_judged records its own grid
                    grid = grid or ensure_grid(cfg, args.record)
                    res = globals()[f"sec_{name}"](cfg, tmp, grid)
                else:
                    res = globals()[f"sec_{name}"](cfg, tmp)
                r[name] = {"result": res}
            except Exception as exc:  # one broken section must not lose the others
                import traceback

                traceback.print_exc()
                r[name] = {"error": f"{type(exc).__name__}: {exc}"[:1000]}
            r[name] |= {"seconds": time.perf_counter() - start, "load": [l0, os.getloadavg()[0]],
                        "invocation": r["command"], "threads": threads, "date": r["date"]}
            write_report(r)
    log(f"wrote {rel(RESULTS / 'report.md')} and report.json")


if __name__ == "__main__":
    main()
