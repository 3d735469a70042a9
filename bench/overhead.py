"""Hook overhead: unsteered vs steeropt (and, with --peers, steering-vectors and repeng) on the embedded model.

    .venv/bin/python bench/overhead.py --json out.json                      # steered vs unsteered, project venv
    bench/.peers-venv/bin/python bench/overhead.py --peers --json out.json  # + the peer libraries (their venv)

Every arm adds the same raw vector (the quickstart wedding diff-in-means direction at layer 10, α = 0.2 in
steeropt's normalised unit, i.e. 0.2 · mean residual norm · unit vector) to the output of decoder layer 10,
at every position. Generation is greedy with min_new_tokens = max_new_tokens, so every arm does the same
work. Arms run interleaved in rounds (order rotated each round); the figure is the best time per arm over the
rounds (the least disturbed run on a shared machine) and the per-round paired ratios are kept too.

Extra tensor operations per steered layer call: one forward (prefill of one prompt, then one cached decode
step) counted with a TorchDispatchMode (aten ops actually executed) and a TorchFunctionMode (torch-level
calls, incl. Tensor methods), steered minus unsteered. Deterministic.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections import Counter
from contextlib import contextmanager, nullcontext
from pathlib import Path

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

ROOT = Path(__file__).resolve().parents[1]
LAYER, ALPHA = 10, 0.2


def read(name):
    return [l.strip() for l in (ROOT / "studies/data" / name).read_text().splitlines() if l.strip()]


def prompts(n):
    out = []
    for fam in ("open_ended", "advice", "descriptions"):
        out += [json.loads(l)["prompt"] for l in read(f"{fam}.jsonl")]
    return [out[i % len(out)] for i in range(n)]


def load():
    from steeropt.errors import ModelError
    from steeropt.engine.models import load_model

    try:
        return load_model()
    except ModelError as exc:
        # transformers < 5 (the peers pin it) refuses steeropt's cached safetensors, saved without the
        # {"format": "pt"} metadata; rewrite this venv's own cache copy with it and load again.
        if "Incompatible safetensors" not in str(exc):
            raise
        from safetensors.torch import load_file, save_file
        from steeropt.engine.models.loading import cache_dir

        for f in (cache_dir() / "models").glob("*/model.safetensors"):
            save_file(load_file(f), f, metadata={"format": "pt"})
        return load_model()


class _Dispatch(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops[str(func.overloadpacket.__name__)] += 1
        return func(*args, **(kwargs or {}))


class _Function(TorchFunctionMode):
    def __init__(self):
        super().__init__()
        self.ops = Counter()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.ops[getattr(func, "__name__", str(func))] += 1
        return func(*args, **(kwargs or {}))


class Arms:
    """Context managers that steer lm's layer LAYER with the same raw vector, per library."""

    def __init__(self, lm, raw: torch.Tensor, peers: bool):
        from steeropt.types import InterventionPlan, Site
        from steeropt.engine.vectors import VectorSet, diff_in_means  # noqa: F401

        self.lm, self.raw = lm, raw
        self.plan = InterventionPlan([Site(LAYER, "add", "wedding")], [ALPHA])
        self.names = ["unsteered", "steeropt"] + (["steering_vectors", "repeng"] if peers else [])

    def ctx(self, name, rows, prompt_len):
        from steeropt.engine.interventions import steer

        if name == "unsteered":
            return nullcontext()
        if name == "steeropt":
            return steer(self.lm, self.vectors, [self.plan], [0] * rows, prompt_len=prompt_len)
        if name == "steering_vectors":
            from steering_vectors import SteeringVector

            return SteeringVector({LAYER: self.raw}, layer_type="decoder_block").apply(self.lm.model)
        return self._repeng()

    @contextmanager
    def _repeng(self):
        from repeng import ControlModel, ControlVector

        cm = ControlModel(self.lm.model, [LAYER])  # wraps the layer; unwrap() restores it
        try:
            cm.set_control(ControlVector(model_type=self.lm.model.config.model_type,
                                         directions={LAYER: self.raw.numpy()}), coeff=1.0)
            yield
        finally:
            cm.unwrap()


def count_ops(lm, arms: Arms) -> dict:
    """Ops executed inside the call of decoder layer LAYER (the module found there while steering, i.e.
    repeng's wrapper), counted from a pre-hook run first to a forward hook run last."""
    tok = lm.tokenizer
    enc = tok([lm.render(prompts(1)[0])], return_tensors="pt", add_special_tokens=False)
    out = {}
    for name in arms.names:
        res = {}
        for mode_cls, key in ((_Dispatch, "aten"), (_Function, "torch_function")):
            with torch.no_grad(), arms.ctx(name, 1, enc["input_ids"].shape[1]):
                layer = lm.model.model.layers[LAYER]
                modes = []
                def enter(_m, _a, _k=None):
                    modes.append(mode_cls())
                    modes[-1].__enter__()
                def leave(_m, _a, _o):
                    modes[-1].__exit__(None, None, None)
                h1 = layer.register_forward_pre_hook(enter, prepend=True)
                h2 = layer.register_forward_hook(leave, always_call=True)
                try:
                    pre = lm.model(**enc, use_cache=True)  # prefill
                    nxt = pre.logits[:, -1:].argmax(-1)
                    mask = torch.cat([enc["attention_mask"], torch.ones_like(nxt)], 1)
                    lm.model(input_ids=nxt, attention_mask=mask, past_key_values=pre.past_key_values, use_cache=True)
                finally:
                    h1.remove()
                    h2.remove()
            res[key] = {"prefill": modes[0].ops, "decode": modes[1].ops}
        out[name] = res
    base = out["unsteered"]
    fig = {}
    for name in arms.names[1:]:
        fig[name] = {}
        for key in ("aten", "torch_function"):
            for phase in ("prefill", "decode"):
                fig[name][f"{key}_{phase}"] = sum(out[name][key][phase].values()) - sum(base[key][phase].values())
                fig[name][f"{key}_{phase}_ops"] = dict(out[name][key][phase] - base[key][phase])
    fig["unsteered_layer_ops"] = {k: {ph: sum(v.values()) for ph, v in d.items()} for k, d in base.items()}
    return fig


def throughput(lm, arms: Arms, batch: int, tokens: int, rounds: int, log) -> dict:
    tok = lm.tokenizer
    enc = tok([lm.render(p) for p in prompts(batch)], return_tensors="pt", padding=True, add_special_tokens=False)
    width = enc["input_ids"].shape[1]
    kw = dict(max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False, temperature=None, top_p=None,
              top_k=None, pad_token_id=tok.pad_token_id)
    times = {n: [] for n in arms.names}
    outs = {}
    with torch.no_grad():
        lm.model.generate(**enc, **(kw | {"max_new_tokens": 2, "min_new_tokens": 2}))  # warm-up
        for r in range(rounds):
            order = arms.names[r % len(arms.names):] + arms.names[:r % len(arms.names)]
            for name in order:
                t = time.perf_counter()
                with arms.ctx(name, batch, width):
                    seq = lm.model.generate(**enc, **kw)
                times[name].append(time.perf_counter() - t)
                outs[name] = seq[:, width:]
            log(f"  overhead batch {batch} round {r + 1}/{rounds}: "
                + ", ".join(f"{n} {times[n][-1]:.2f}s" for n in arms.names))
    n_tok = batch * tokens
    fig = {"batch": batch, "new_tokens": tokens, "rounds": rounds, "seconds": times,
           "tok_s": {n: n_tok / min(t) for n, t in times.items()}}
    fig["ratio_vs_unsteered"] = {n: fig["tok_s"][n] / fig["tok_s"]["unsteered"] for n in arms.names[1:]}
    fig["paired_ratio_vs_unsteered_median"] = {n: statistics.median(u / s for u, s in zip(times["unsteered"], times[n]))
                                               for n in arms.names[1:]}
    if "steering_vectors" in arms.names:
        fig["steeropt_over_peer"] = {p: fig["tok_s"]["steeropt"] / fig["tok_s"][p] for p in ("steering_vectors", "repeng")}
        fig["paired_steeropt_over_peer_median"] = {
            p: statistics.median(tp / ts for tp, ts in zip(times[p], times["steeropt"])) for p in ("steering_vectors", "repeng")}
        # Same vector, same layer: greedy outputs must agree (else the comparison is not like for like).
        fig["same_tokens_as_steeropt"] = {p: bool(torch.equal(outs[p], outs["steeropt"])) for p in ("steering_vectors", "repeng")}
        fig["steered_differs_from_unsteered"] = not torch.equal(outs["steeropt"], outs["unsteered"])
    return fig


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--peers", action="store_true")
    ap.add_argument("--batches", type=int, nargs="*", default=[1, 16])
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--json")
    args = ap.parse_args()
    log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    from importlib.metadata import version

    from steeropt.engine.vectors import VectorSet, diff_in_means

    lm = load()
    vec = diff_in_means(lm, read("wedding_positive.txt"), read("wedding_neutral.txt"), LAYER, name="wedding")
    vs = VectorSet()
    vs.add(vec)
    raw = (ALPHA * vec.mean_norm * vec.vector / vec.vector.norm()).float()
    arms = Arms(lm, raw, args.peers)
    arms.vectors = vs
    fig = {"python": sys.executable, "versions": {p: version(p) for p in
           ["torch", "transformers"] + (["steering-vectors", "repeng"] if args.peers else [])},
           "platform": platform.platform(), "layer": LAYER, "alpha": ALPHA, "raw_vector_norm": float(raw.norm()),
           "torch_threads": torch.get_num_threads(),
           "ops": count_ops(lm, arms), "loadavg_start": os.getloadavg()}
    fig["throughput"] = [throughput(lm, arms, b, args.tokens, args.rounds, log) for b in args.batches]
    fig["loadavg_end"] = os.getloadavg()
    text = json.dumps(fig, indent=1)
    if args.json:
        Path(args.json).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
