"""Parity: does the exported setting do on the serving engine what it did in the study?

    >>> rep = parity("profiles/quickstart", engine="llama.cpp")     # doctest: +SKIP
    >>> rep.passed, rep.failures
    (True, [])

For each family with an exported setting, on the family's *held-out* prompts (from the study spec the profile
names), greedy decoding with the profile's settings:
- the engine runs the export: llama.cpp (llama-cpp-python, in-process) on the same GGUF file with the family's
  `<family>.control-vector.gguf`, loaded as llama.cpp's common loader does (`load_control_vector`) and set with
  `llama_set_adapter_cvec` over every layer, strength 1 (`--control-vector FILE`); or `transformers`: the
  deployment path `apply_profile` (hooks with one strength for the whole batch, `model.generate`);
- the reference is the study's own path: `Generator.run` with the family's plan on the dequantised fp32 model;
- both are scored with the study's objective stack (each engine's unsteered answers are its baseline, as in
  `pick`); per axis the mean paired difference (engine − reference, paired by prompt) with a 95% interval;
- greedy token agreement (identical answers, matching prefix); KL(steered || unsteered) on each engine over the
  first `kl_positions` generated tokens, teacher-forced on its own answers, as the stack's `kl`;
- sign and scale on the engine: strength 0 must equal no vector (logprobs within 1e-4), strength ½ must land
  strictly between (0 < KL(½) < KL(1)); and the engine at strength 1 must be closer (mean KL of the next-token
  distributions on the reference's tokens) to the reference at +α than at 0, −α, α/2, 2α, or the same raw
  vector one layer up or down: a wrong sign, scale or layer index is named, not just "different".

Why a tolerance: llama.cpp runs the Q4_1 weights with its quantised kernels (activations rounded to 8 bits
for the Q4_1 x Q8_1 dot products), the reference the same weights dequantised to fp32. Next-token
distributions differ slightly, a near-tie flips a greedy token, and the answers diverge from there, so scores
and KL move with the divergence; see TOLERANCE for the figures and the unsteered pair (the floor: the two
engines with no steering at all) reported next to every steered figure.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import torch

from steeropt.deploy.engines import (LlamaCppEngine, ParityFailure, ProfileEngine,  # noqa: F401  (public here)
                                     load_control_vector)
from steeropt.deploy.profiles import ProfileError, load_profile
from steeropt.engine.interventions import site_norm, steer
from steeropt.engine.models import load_model
from steeropt.engine.models.loading import file_sha256, resolve_source
from steeropt.errors import SteeroptError
from steeropt.evaluation.objectives.aggregate import mean, mean_ci
from steeropt.runner.harness import Harness
from steeropt.specs import build
from steeropt.types import InterventionPlan, Sample, Site

# What "the same" means across engines (see the module docstring for why there is a tolerance at all).
TOLERANCE = {
    "axis": 0.15,  # |mean paired difference| of a [0, 1] score, pooled over the checked prompts
    "kl_rel": 0.35,  # |KL_engine − KL_reference| <= kl_rel · KL_reference + kl_abs (nats)
    "kl_abs": 0.05,
    "zero_strength": 1e-4,  # max |Δ log p| between strength 0 and no control vector (adding 0 is exact)
    "match_kl": 0.1,  # mean KL(engine || reference) of next-token distributions at the setting (nats)
    "first_n": 4,  # reported, not gated: share of prompts whose first 4 greedy tokens agree
}
WHY = ("llama.cpp computes with the Q4_1 weights and 8-bit activations (Q4_1 x Q8_1 dot products), the "
       "reference with the same weights dequantised to fp32: next-token log-probs differ by a few 0.01 nats, "
       "near-ties flip greedy tokens and the answers diverge after the flip, so each score moves with the "
       "divergence. Greedy token agreement is reported next to its unsteered floor (the two engines without "
       "any steering disagree as often) and not gated; the gates are on the next-token distributions, "
       "teacher-forced on the same tokens (match_kl, and the setting must be nearer than every neighbour), on "
       "the KL dose and on the pooled scores, each far from what a wrong sign, scale or layer gives.")
ENGINES = ("llama.cpp", "transformers")


# ---- the reference (the study's path) --------------------------------------------------------------------
@torch.no_grad()
def reference_dists(lm, vectors, plans, prompt_ids, target_ids) -> list[torch.Tensor]:
    """Per plan, [T, V] log-softmax predicting each target token, teacher-forced with `steer` (one row per plan)."""
    ids = torch.tensor([list(prompt_ids) + list(target_ids)] * len(plans), device=lm.device)
    with steer(lm, vectors, plans, prompt_len=len(prompt_ids)):
        logits = lm.model(input_ids=ids, use_cache=False).logits.double()
    p = len(prompt_ids)
    return [torch.log_softmax(logits[i, p - 1: p - 1 + len(target_ids)], -1).cpu() for i in range(len(plans))]


def kl(p_log: torch.Tensor, q_log: torch.Tensor) -> float:
    """Mean over rows of KL(p || q) (nats), log-probability rows [T, V]."""
    if p_log.shape[0] == 0:
        return float("nan")
    return float((p_log.exp() * (p_log - q_log)).sum(-1).mean())


def neighbour_plans(lm, vectors, plan) -> dict:
    """Settings a broken export would match instead of the right one: no steering, −α, α/2, 2α, and (add
    sites only) the same raw vector one layer down / up (α rescaled by the layers' activation norms)."""
    scaled = lambda k: InterventionPlan(list(plan.sites), [k * a for a in plan.alphas])  # noqa: E731
    out = {"setting (+α)": plan, "unsteered": InterventionPlan([], []), "-α (sign flipped)": scaled(-1.0),
           "α/2": scaled(0.5), "2α": scaled(2.0)}
    if all(s.controller == "add" for s in plan.sites):
        for shift, name in ((-1, "layer - 1"), (1, "layer + 1")):
            sites = [Site(s.layer + shift, s.controller, s.vector, s.heads, s.positions) for s in plan.sites]
            if all(0 <= s.layer < lm.adapter.n_layers for s in sites):
                alphas = [a * site_norm(lm, vectors, s) / site_norm(lm, vectors, t)
                          for a, s, t in zip(plan.alphas, plan.sites, sites)]
                out[name] = InterventionPlan(sites, alphas)
    return out


# ---- the report ------------------------------------------------------------------------------------------
@dataclass
class ParityReport:
    profile: str
    engine: str
    families: dict = field(default_factory=dict)
    pooled: dict = field(default_factory=dict)
    skipped: dict = field(default_factory=dict)
    failures: list = field(default_factory=list)
    info: dict = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return not self.failures

    def to_dict(self) -> dict:
        return {"profile": self.profile, "engine": self.engine, "passed": self.passed, "failures": self.failures,
                "tolerance": {**TOLERANCE, "why": WHY}, "pooled": self.pooled, "families": self.families,
                "skipped": self.skipped, "info": self.info}


def _axes_diff(eng_recs: list[dict], ref_recs: list[dict], axes: list[str]) -> dict:
    ref_by = {(r["family"], r["prompt"]): r for r in ref_recs}
    out = {}
    for axis in axes:
        get = (lambda r: r["hm"]) if axis == "hm" else (lambda r: r["scores"].get(axis))
        pairs = [(get(e), get(ref_by[(e["family"], e["prompt"])])) for e in eng_recs]
        pairs = [(a, b) for a, b in pairs if a is not None and b is not None]
        d = [a - b for a, b in pairs]
        ci = mean_ci(d) if d else None
        out[axis] = {"engine": mean([a for a, _ in pairs]), "reference": mean([b for _, b in pairs]),
                     "diff": mean(d), "ci": list(ci) if ci else None, "n": len(d), "diffs": d}
    return out


def _agreement(eng: list, ref: list, first_n: int) -> dict:
    prefix, same, first = [], 0, 0
    for a, b in zip(eng, ref):
        k = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
        prefix.append(k)
        same += a == b
        first += k >= min(first_n, len(b))
    n = len(ref)
    return {"identical_share": same / n, "mean_prefix": sum(prefix) / n, "first_n_share": first / n,
            "mean_prefix_share": sum(k / max(1, len(b)) for k, b in zip(prefix, ref)) / n, "prefix": prefix}


def parity(profile, *, engine: str = "llama.cpp", families: list[str] | None = None, lm=None,
           max_new_tokens: int | None = None, max_prompts: int | None = None) -> ParityReport:
    """Run the profile's exported settings on `engine` and compare with the study's reference (module docstring).
    `max_prompts`: only the first N held-out prompts of each family (a quick check)."""
    if engine not in ENGINES:
        raise SteeroptError(f"unknown engine '{engine}': expected one of {', '.join(ENGINES)}")
    prof = load_profile(profile)
    spec_ref = (prof.data.get("study") or {}).get("spec")
    try:
        spec = build("study", spec_ref) if spec_ref else None
    except SteeroptError as exc:
        raise ProfileError(f"profile {prof.path}: its study spec {spec_ref} (held-out prompts, objective) is "
                           f"unusable: {exc}") from None
    if spec is None:
        raise ProfileError(f"profile {prof.path} names no study spec (study.spec): parity needs its held-out prompts")
    lm = lm or load_model(prof.model.get("name"))
    prof.check_model(lm)
    vectors = prof.vectors()
    dec = prof.decoding()
    if dec.temperature > 0:  # token agreement and paired scores need deterministic answers
        dec = replace(dec, temperature=0.0)
    if max_new_tokens:
        dec = replace(dec, max_new_tokens=max_new_tokens)
    splits = spec.splits()
    names = families or [f for f in prof.families if prof.families[f].get("status") == "ok"]
    unknown = [f for f in names if f not in prof.families]
    if unknown:
        raise ProfileError(f"profile {prof.path} has no famil{'y' if len(unknown) == 1 else 'ies'} {unknown}; "
                           f"it has {sorted(prof.families)}")
    report = ParityReport(str(prof.path), engine)
    checked = []
    for f in names:
        fam = prof.families[f]
        if fam.get("status") != "ok":
            report.skipped[f] = f"no deployable setting ({fam.get('reason', '')})"
        elif f not in splits:
            report.skipped[f] = f"the study spec has no family '{f}'"
        elif engine == "llama.cpp" and not (fam.get("llama_cpp") or {}).get("control_vector"):
            report.skipped[f] = "no llama.cpp control vector: " + ((fam.get("llama_cpp") or {}).get("skipped")
                                                                  or "not exported (only add settings export)")
        else:
            checked.append(f)
    if not checked:
        raise ProfileError(f"profile {prof.path}: nothing to check on {engine}: "
                           + "; ".join(f"{k}: {v}" for k, v in report.skipped.items()))
    if engine == "llama.cpp":
        kind, path = resolve_source(prof.model.get("name"))
        if kind != "gguf":
            raise ProfileError(f"llama.cpp parity needs the GGUF the profile was made from; {prof.model.get('name')} is a "
                               "transformers directory")
        if prof.model.get("sha256") and file_sha256(path) != prof.model["sha256"]:
            raise ProfileError(f"{path} is not the GGUF the profile was made from (sha256 differs)")
        eng = LlamaCppEngine(path, n_ctx=1024)
        eng.files = {f: prof.path / prof.families[f]["llama_cpp"]["control_vector"] for f in checked}
        report.info["llama_cpp"] = {"version": eng.version, "model": str(path), "n_layer": eng.n_layer}
    else:
        eng = ProfileEngine(lm, prof)
    # the study's judge and stack on the profile's vectors and decoding (no dose calibration: the profile holds α)
    harness = Harness(spec).load(lm, vectors=vectors, decoding=dec, calibrate_doses=False)
    objective = harness.objective
    axes = list(objective.scores) + ["hm"]
    kpos = objective.tier1.kl_positions or 8
    eos = _eos_ids(lm)
    tok = lm.tokenizer
    base = InterventionPlan([], [])
    pooled_e, pooled_r, pooled_eu, pooled_ru = [], [], [], []
    try:
        for f in checked:
            plan = prof.plan(f)
            prompts = list(splits[f].held_out)[:max_prompts]
            pids = [tok(lm.render(p), add_special_tokens=False)["input_ids"] for p in prompts]
            ref = harness.generate([(f, p) for p in prompts], [plan, base])
            ref_s, ref_u = ref[: len(prompts)], ref[len(prompts):]
            eng_samples = []
            for cand, scale in ((0, 1.0), (1, None)):
                eng.steer(f, scale)
                for p, ids in zip(prompts, pids):
                    out, lps, fin = eng.greedy(ids, dec.max_new_tokens, eos)
                    eng_samples.append(Sample(p, f, list(ids), out, tok.decode(out, skip_special_tokens=True), lps,
                                              fin, cand, spec.seed, {"engine": engine}))
            eng_s, eng_u = eng_samples[: len(prompts)], eng_samples[len(prompts):]
            res_r = harness.evaluate(ref_s + ref_u, [plan, base], ref_u)
            res_e = harness.evaluate(eng_s + eng_u, [plan, base], eng_u)
            pooled_r += res_r[0].samples
            pooled_e += res_e[0].samples
            pooled_ru += res_r[1].samples
            pooled_eu += res_e[1].samples
            # engine-side distributions: KL on its own answers; sign/scale on the reference's answers
            kl_e, zero_diff, kl_half, kl_full, match = [], 0.0, [], [], {}
            cands = neighbour_plans(lm, vectors, plan)
            for p, ids, es, rs in zip(prompts, pids, eng_s, ref_s):
                own, tgt = es.token_ids[:kpos], rs.token_ids[:kpos]
                eng.steer(f, 1.0)
                d_own, d1 = eng.dists(ids, own), eng.dists(ids, tgt)
                eng.steer(f, 0.5)
                dh = eng.dists(ids, tgt)
                eng.steer(f, 0.0)
                d0 = eng.dists(ids, tgt)
                eng.steer(f, None)
                du_own, du = eng.dists(ids, own), eng.dists(ids, tgt)
                kl_e.append(kl(d_own, du_own))
                zero_diff = max(zero_diff, float((d0 - du).abs().max()) if len(tgt) else 0.0)
                kl_half.append(kl(dh, du))
                kl_full.append(kl(d1, du))
                for (name, c), rd in zip(cands.items(), reference_dists(lm, vectors, list(cands.values()), ids, tgt)):
                    match.setdefault(name, []).append(kl(d1, rd))
                    if name == "unsteered":  # the floor: both engines without steering, same tokens
                        match.setdefault("floor (both unsteered)", []).append(kl(du, rd))
            eng.steer(f, None)
            report.families[f] = _family_report(f, prompts, res_e, res_r, axes, eng_s, eng_u, ref_s, ref_u, kl_e,
                                                zero_diff, kl_half, kl_full, match)
            report.failures += [f"{f}: {x}" for x in report.families[f]["failures"]]
    finally:
        eng.close()
        harness.close()
    report.pooled = {"prompts": len(pooled_e), "axes": _strip(_axes_diff(pooled_e, pooled_r, axes)),
                     "unsteered_axes": _strip(_axes_diff(pooled_eu, pooled_ru, axes))}
    for axis, d in report.pooled["axes"].items():
        if d["diff"] is not None and abs(d["diff"]) > TOLERANCE["axis"]:
            report.failures.append(f"{axis}: engine − reference = {d['diff']:+.3f} "
                                   f"(95% CI {_ci(d['ci'])}) over {d['n']} prompts, outside ±{TOLERANCE['axis']}")
    return report


def _eos_ids(lm) -> set[int]:
    """The ids that end an answer, as in Generator: the generation config's EOS ids and the tokenizer's."""
    eos = lm.model.generation_config.eos_token_id
    ids = set(eos if isinstance(eos, (list, tuple)) else [] if eos is None else [eos])
    return ids | {lm.tokenizer.eos_token_id}


def _strip(axes: dict) -> dict:
    return {k: {kk: vv for kk, vv in v.items() if kk != "diffs"} for k, v in axes.items()}


def _ci(ci) -> str:
    return f"[{ci[0]:+.3f}, {ci[1]:+.3f}]" if ci else "n/a"


def _family_report(f, prompts, res_e, res_r, axes, eng_s, eng_u, ref_s, ref_u, kl_e, zero_diff, kl_half, kl_full,
                   match) -> dict:
    tol = TOLERANCE
    kl_r = [r["metrics"].get("kl") for r in res_r[0].samples]
    ke, kr = mean([x for x in kl_e if x == x]), mean(kl_r)
    floor = mean(match.pop("floor (both unsteered)", []))
    match_mean = {k: mean(v) for k, v in match.items()}
    closest = min(match_mean, key=lambda k: match_mean[k])
    at = match_mean["setting (+α)"]
    kh, kf = mean(kl_half), mean(kl_full)
    checks = {
        "zero_strength": {"max_abs_logprob_diff": zero_diff, "ok": zero_diff <= tol["zero_strength"]},
        "half_strength": {"kl_half": kh, "kl_full": kf, "ok": bool(kh is not None and kf is not None and 0 < kh < kf)},
        "match": {"closest": closest, "kl_to": match_mean, "floor_kl": floor,
                  "ok": closest == "setting (+α)" and at <= tol["match_kl"]},
    }
    tokens = {"steered": _agreement([s.token_ids for s in eng_s], [s.token_ids for s in ref_s], tol["first_n"]),
              "unsteered": _agreement([s.token_ids for s in eng_u], [s.token_ids for s in ref_u], tol["first_n"])}
    kl_ok = ke is not None and kr is not None and abs(ke - kr) <= tol["kl_rel"] * kr + tol["kl_abs"]
    failures = []
    if not checks["zero_strength"]["ok"]:
        failures.append(f"strength 0 differs from no control vector by {zero_diff:.2e} in log p "
                        f"(> {tol['zero_strength']:g}): the vector is not applied as a plain addition")
    if not checks["half_strength"]["ok"]:
        failures.append(f"strength ½ does not land between 0 and 1: KL(½)={kh}, KL(1)={kf}")
    if closest != "setting (+α)":
        failures.append(f"the engine's steered distributions are closest to the reference at '{closest}' "
                        f"(KL {match_mean[closest]:.3f}), not at the setting (KL {at:.3f})")
    elif at > tol["match_kl"]:
        failures.append(f"the engine's steered distributions are {at:.3f} nats from the reference's at the setting "
                        f"(> {tol['match_kl']:g}; unsteered floor {_f(floor)})")
    if not kl_ok:
        failures.append(f"KL to unsteered: engine {ke}, reference {kr}: outside "
                        f"{tol['kl_rel']:g}·reference + {tol['kl_abs']:g}")
    return {"prompts": len(prompts), "axes": _strip(_axes_diff(res_e[0].samples, res_r[0].samples, axes)),
            "unsteered_axes": _strip(_axes_diff(res_e[1].samples, res_r[1].samples, axes)),
            "tokens": tokens, "kl": {"engine": ke, "reference": kr, "ok": kl_ok}, "checks": checks,
            "failures": failures,
            "texts": [{"prompt": p, "engine": e.text, "reference": r.text} for p, e, r in zip(prompts, eng_s, ref_s)]}


def format_report(rep: ParityReport) -> str:
    """A plain-text summary for the CLI."""
    lines = [f"parity of {rep.profile} on {rep.engine} vs the transformers reference (held-out prompts, greedy)"]
    for f, r in rep.families.items():
        t, ck = r["tokens"], r["checks"]
        lines.append(f"  {f} ({r['prompts']} prompts): identical answers {t['steered']['identical_share']:.0%} "
                     f"(unsteered {t['unsteered']['identical_share']:.0%}), first {TOLERANCE['first_n']} tokens agree "
                     f"{t['steered']['first_n_share']:.0%}, mean matching prefix {t['steered']['mean_prefix']:.1f} tokens")
        lines.append(f"    KL to unsteered: engine {_f(r['kl']['engine'])}, reference {_f(r['kl']['reference'])}; "
                     f"strength 0 vs none max |Δlog p| {ck['zero_strength']['max_abs_logprob_diff']:.1e}; "
                     f"KL(½) {_f(ck['half_strength']['kl_half'])} < KL(1) {_f(ck['half_strength']['kl_full'])}; "
                     f"closest reference: {ck['match']['closest']} (KL {_f(ck['match']['kl_to'][ck['match']['closest']])}, "
                     f"unsteered floor {_f(ck['match']['floor_kl'])})")
        for axis, d in r["axes"].items():
            lines.append(f"    {axis}: engine {_f(d['engine'])} reference {_f(d['reference'])} "
                         f"diff {_f(d['diff'], '+.3f')} {_ci(d['ci'])}")
    for axis, d in rep.pooled.get("axes", {}).items():
        u = rep.pooled["unsteered_axes"].get(axis, {})
        lines.append(f"  pooled {axis}: diff {_f(d['diff'], '+.3f')} {_ci(d['ci'])} over {d['n']} prompts "
                     f"(unsteered pair: {_f(u.get('diff'), '+.3f')}); tolerance ±{TOLERANCE['axis']}")
    for f, why in rep.skipped.items():
        lines.append(f"  skipped {f}: {why}")
    lines.append("PASS" if rep.passed else "FAIL:\n  " + "\n  ".join(rep.failures))
    return "\n".join(lines)


def _f(x, fmt=".3f") -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, fmt)
