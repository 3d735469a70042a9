"""How much judge work does the cheap tier save, and does it change the best α?

A 1-D sweep of the wedding concept (diff-in-means at layer 4 from studies/data/wedding_positive.txt vs
wedding_neutral.txt, Add controller, normalised α) on the embedded model. Every sample is scored twice
by the same judge: once through objectives/tiered-default.yaml with the gates it shipped until none qualified
(gates first, judge on survivors + a 10% audit) and once with no gate (judge every sample). Prints, per α, the filtered share and
reasons, the trial values under both, the judge requests each needed, and the best α under both.

    PYTHONPATH=. .venv/bin/python bench/tiering.py [--prompts 8] [--max-new-tokens 48] [--judge local-default]

The judge cache goes to a temp file so "requests" are the stack's own requests, independent of earlier runs.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_ALPHAS = [0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.7, 1.0]


def best(results, alphas, key="scalar", constrained=True):
    """α with the highest `key` among non-failed (and, if constrained, feasible) trials; None if none."""
    ok = [(r.values[key], a) for r, a in zip(results, alphas)
          if not r.failed and (r.feasible or not constrained) and r.values.get(key) is not None]
    return max(ok)[1] if ok else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--alphas", type=float, nargs="*", default=DEFAULT_ALPHAS)
    ap.add_argument("--judge", default="local-default")
    ap.add_argument("--out", default=None, help="write per-sample records of both runs as JSONL here")
    args = ap.parse_args()

    from steeropt.specs.concepts import load_concept
    from steeropt.engine.generation import Decoding, Generator
    from steeropt.evaluation.judges import make_judge
    from steeropt.engine.models import load_model
    from steeropt.evaluation.objectives import ConceptInfo, ObjectiveSpec, ObjectiveStack
    from steeropt.specs.factory import build
    from steeropt.types import InterventionPlan, Site
    from steeropt.engine.vectors import VectorSet, diff_in_means

    t0 = time.perf_counter()
    lm = load_model()
    read = lambda name: [l.strip() for l in (ROOT / "studies/data" / name).read_text().splitlines() if l.strip()]  # noqa: E731
    vectors = VectorSet()
    vectors.add(diff_in_means(lm, read("wedding_positive.txt"), read("wedding_neutral.txt"), 4, name="wedding"))
    prompts = [("open_ended", json.loads(l)["prompt"]) for l in (ROOT / "studies/data/open_ended.jsonl").read_text().splitlines() if l.strip()]
    prompts += [("advice", json.loads(l)["prompt"]) for l in (ROOT / "studies/data/advice.jsonl").read_text().splitlines() if l.strip()]
    prompts = prompts[: args.prompts // 2] + [p for p in prompts if p[0] == "advice"][: args.prompts - args.prompts // 2]
    plans = [InterventionPlan([Site(4, "add", "wedding")], [a], params={"alpha": a}) for a in args.alphas]
    dec = Decoding(max_new_tokens=args.max_new_tokens)
    gen = Generator(lm, vectors)

    t = time.perf_counter()
    samples = gen.run(prompts, plans, dec, seed=0)
    baseline = [s for s in samples if s.candidate == 0] if args.alphas[0] == 0.0 else \
        gen.run(prompts, [InterventionPlan([], [])], dec, seed=0)
    t_gen = time.perf_counter() - t
    concept = ConceptInfo.from_concept(load_concept("wedding"))

    # The gates tiered-default shipped until none qualified on unseen concepts (bench/judge_quality/gates.md):
    # kept here so this figure stays comparable with the earlier runs.
    old_gates = [{"metric": "rep_3", "op": ">", "value": 0.2, "reason": "collapsed"},
                 {"metric": "surprisal_drift", "op": ">", "value": 2.5, "reason": "off_manifold"},
                 {"metric": "degenerate", "op": ">", "value": 0.5, "reason": "degenerate"}]
    gated_spec = ObjectiveSpec.model_validate({**build("objective", "tiered-default").model_dump(), "gates": old_gates})
    all_spec = ObjectiveSpec.model_validate({**gated_spec.model_dump(), "name": "judge-all", "gates": []})
    with tempfile.TemporaryDirectory() as tmp:
        judge = make_judge(args.judge, lm=lm, cache=Path(tmp) / "judge.sqlite")
        t = time.perf_counter()
        stack_all = ObjectiveStack(all_spec, lm, judge, concept)
        r_all = stack_all.evaluate(samples, plans, baseline, vectors)
        t_all = time.perf_counter() - t
        # Tier-1 cost alone (the gated run repeats it; judge answers now come from the cache).
        stack_g = ObjectiveStack(gated_spec, lm, judge, concept)
        t = time.perf_counter()
        stack_g.tier1_metrics(samples, plans, baseline, vectors)
        t_tier1 = time.perf_counter() - t
        r_g = stack_g.evaluate(samples, plans, baseline, vectors)
        judge.close()

    f = lambda x: "  -  " if x is None else f"{x:5.2f}"  # noqa: E731
    print(f"model {lm.name}; {len(prompts)} prompts x {len(plans)} alphas = {len(samples)} samples, "
          f"{args.max_new_tokens} new tokens; judge {args.judge}")
    print(f"time: generate {t_gen:.1f}s, tier-1 metrics {t_tier1:.1f}s, judge-all evaluate {t_all:.1f}s\n")
    print("alpha | filt  reasons                      | gated: conc  coh   hm   scal | all: conc  coh   hm   scal "
          "| rep3  drift  kl    kw   pref  util | req g/all")
    for a, g, x in zip(args.alphas, r_g, r_all):
        v = g.values
        reasons = ",".join(f"{k}:{n}" for k, n in sorted(g.counts["filtered_reasons"].items()))
        print(f"{a:5.2f} | {f(v['filtered_share'])} {reasons:28s} | {f(v['concept'])} {f(v['coherency'])} {f(v['hm'])} "
              f"{f(v['scalar'])}{'*' if g.failed else ' '}| {f(x.values['concept'])} {f(x.values['coherency'])} "
              f"{f(x.values['hm'])} {f(x.values['scalar'])} | {f(v['rep_3'])} {f(v['surprisal_drift'])} {f(v['kl'])} "
              f"{f(v['keyword_rate'])} {f(v['preference'])} {f(v['utility'])} | {g.counts['judge_requests']}/{x.counts['judge_requests']}")
    req_g = sum(r.counts["judge_requests"] for r in r_g)
    req_all = sum(r.counts["judge_requests"] for r in r_all)
    filt = sum(r.counts["filtered"] for r in r_g)
    aud = sum(r.counts["audited"] for r in r_g)
    agree = [r.counts["audit_agree"] for r in r_g]
    scored = sum(r.counts["audit_scored"] for r in r_g)
    print(f"\njudge requests: gated {req_g} vs judge-all {req_all} -> cheap tier saves {1 - req_g / req_all:.1%} "
          f"({filt} of {len(samples)} samples filtered, {aud} audited)")
    print(f"gate/judge agreement on audited filtered samples: {sum(agree)}/{scored}"
          + (f" = {sum(agree) / scored:.0%}" if scored else ""))
    # Agreement over ALL filtered samples, possible here because the judge-all run scored them too.
    coh_all = {(r['candidate'], r['index']): r['scores']['coherency'] for x in r_all for r in x.samples}
    fs = [coh_all[(r['candidate'], r['index'])] for g in r_g for r in g.samples if r['filtered']]
    fs = [c for c in fs if c is not None]
    if fs:
        print(f"judge coherency < 0.5 on ALL filtered samples (from the judge-all run): "
              f"{sum(c < 0.5 for c in fs)}/{len(fs)} = {sum(c < 0.5 for c in fs) / len(fs):.0%}")
    for key in ("scalar", "hm"):
        for con in (True, False):
            print(f"best alpha by {key:6s} ({'coherency >= 0.5' if con else 'unconstrained'}): "
                  f"gated {best(r_g, args.alphas, key, con)}  judge-all {best(r_all, args.alphas, key, con)}")
    print(f"total {time.perf_counter() - t0:.0f}s")
    if args.out:
        with open(args.out, "w") as fh:
            for run, res in (("gated", r_g), ("all", r_all)):
                for r in res:
                    for rec in r.samples:
                        fh.write(json.dumps({"run": run, "alpha": args.alphas[r.plan_index], **rec}) + "\n")


if __name__ == "__main__":
    main()
