"""Batched generation over prompts × candidate plans: one `generate` call per chunk of rows.

On CPU with fp32 weights the model first goes through `fastpath.prepare` (prepacked weights, fused
q/k/v and gate/up), `generate` keeps its KV cache in preallocated tensors (a static cache), and the rows'
shared opening (the chat template's system turn) is computed once per plan and copied to its rows."""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Iterable, Sequence

import torch

from steeropt.errors import SteeroptError
from steeropt.engine import fastpath
from steeropt.engine.interventions import steer, validate_plans
from steeropt.engine.models import LoadedModel
from steeropt.timing import phase
from steeropt.types import InterventionPlan, Sample
from steeropt.engine.vectors import VectorSet


DEFAULT_FAMILY = "default"  # the family of a prompt given as a plain string


@dataclass(frozen=True)
class Decoding:
    max_new_tokens: int = 48  # enough to see fluency and topic, short enough for many candidates
    temperature: float = 0.0  # 0 = greedy: candidates differ only by their steering
    top_p: float = 1.0
    repetition_penalty: float = 1.0  # >1 hides collapse from the rep-3 gate; keep 1 when tuning α

    def __post_init__(self):
        if self.max_new_tokens < 1:
            raise SteeroptError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.temperature < 0 or not 0 < self.top_p <= 1 or self.repetition_penalty <= 0:
            raise SteeroptError(f"invalid decoding settings {asdict(self)}")

    def generate_kwargs(self) -> dict:
        kw = {"max_new_tokens": self.max_new_tokens, "repetition_penalty": self.repetition_penalty}
        if self.temperature > 0:
            return kw | {"do_sample": True, "temperature": self.temperature, "top_p": self.top_p}
        return kw | {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}


class Generator:
    """Generates completions for every (prompt, plan) pair.

    memory_cap_gb bounds the rows per generate call (KV cache + one step's logits); max_batch bounds it too,
    since on CPU throughput stops improving past a few dozen rows.

    Example:
        >>> gen = Generator(lm, vectors)
        >>> samples = gen.run([("open", "Tell me about your weekend.")], plans, Decoding(max_new_tokens=32))
    """

    def __init__(self, lm: LoadedModel, vectors: VectorSet | None = None, *, memory_cap_gb: float = 4.0,
                 max_batch: int = 64, fast: bool = True):
        self.lm, self.vectors = lm, vectors if vectors is not None else VectorSet()
        self.memory_cap_gb, self.max_batch = memory_cap_gb, max_batch
        # fast=False keeps transformers' plain path (the speed benchmark's baseline arm)
        self.fast = fastpath.prepare(lm) if fast else False

    def rows_per_call(self, prompt_len: int, decoding: Decoding) -> int:
        cfg = self.lm.model.config
        steps = decoding.max_new_tokens
        kv_dim = getattr(cfg, "num_key_value_heads", cfg.num_attention_heads) * self.lm.adapter.head_dim
        per_row = 4 * (4 * cfg.vocab_size  # one step's logits: the model's, generate's copy, our log-softmax + the previous one
                       + 2 * cfg.num_hidden_layers * (prompt_len + steps) * kv_dim  # KV cache
                       + 8 * (prompt_len + steps) * cfg.hidden_size)  # activations in flight
        return max(1, min(self.max_batch, int(self.memory_cap_gb * 2**30 // per_row)))

    def run(self, prompts: Sequence[tuple[str, str] | str], plans: Sequence[InterventionPlan],
            decoding: Decoding = Decoding(), seed: int = 0, progress=None) -> list[Sample]:
        """prompts: (family, prompt text) pairs, or plain prompt strings (family "default"). Returns plan-major
        samples: plan 0 × every prompt, plan 1 ... Each sample's `alpha` is its plan's strength. Plans with
        different per-candidate decoding overrides go to separate generate calls."""
        prompts = [(DEFAULT_FAMILY, p) if isinstance(p, str) else tuple(p) for p in prompts]
        with phase("generation"):
            return self._run(prompts, plans, decoding, seed, progress)

    def _run(self, prompts, plans, decoding, seed, progress) -> list[Sample]:
        if not prompts:
            raise SteeroptError("no prompts to generate from")
        plans = list(plans) or [InterventionPlan([], [])]
        validate_plans(self.lm, self.vectors, plans)
        rows = [(p, j) for p in range(len(plans)) for j in range(len(prompts))]
        out: dict[tuple[int, int], Sample] = {}
        # rows of one generate call share their decoding and their instruction (the prompted arm's rows render
        # another user turn)
        by_decoding: dict[tuple, list[tuple[int, int]]] = {}
        for row in rows:
            plan = plans[row[0]]
            dec = replace(decoding, **plan.decoding) if plan.decoding else decoding
            by_decoding.setdefault((dec, plan.instruction), []).append(row)
        chunk_no = 0
        for (dec, instruction), dec_rows in by_decoding.items():
            width = max(len(self.lm.tokenizer(self.lm.render(prompts[j][1], instruction))["input_ids"]) for _, j in dec_rows)
            size = self.rows_per_call(width, dec)
            for start in range(0, len(dec_rows), size):
                chunk = dec_rows[start:start + size]
                for sample in self._generate(chunk, prompts, plans, dec, seed + chunk_no, instruction):
                    out[(sample.candidate, sample.meta.pop("prompt_index"))] = sample
                chunk_no += 1
                if progress is not None:
                    progress(len(chunk))
        return [out[row] for row in rows]

    @torch.no_grad()
    def _generate(self, rows, prompts, plans, decoding: Decoding, seed: int, instruction: str | None = None) -> Iterable[Sample]:
        tok = self.lm.tokenizer
        ids = [tok(self.lm.render(prompts[j][1], instruction), add_special_tokens=False)["input_ids"] for _, j in rows]
        kinds = sorted({p for p, _ in rows})
        # the chat template's system turn opens every row: on the fast path its KV is computed once per plan
        shared = fastpath.shared_prefix(ids) if self.fast and len(rows) > len(kinds) else 0
        input_ids, mask = _layout(ids, shared, tok.pad_token_id)
        width = input_ids.shape[1]
        dev = self.lm.device
        cache = {}
        if shared:  # every row starts with the same prefix: any len(kinds) rows hold it once per plan
            cache = {fastpath.cache_kwarg(self.lm.model): self._prefix_cache(
                input_ids[:len(kinds), :shared].to(dev), rows, kinds, plans, width, width + decoding.max_new_tokens)}
        elif self.fast:
            cache = {"cache_implementation": "static"}
        torch.manual_seed(seed)
        rec = _ChosenLogprobs()
        handle = self.lm.model.register_forward_hook(rec.hook, with_kwargs=True)
        try:
            with steer(self.lm, self.vectors, plans, [p for p, _ in rows], prompt_len=width, pad_mask=mask.to(dev)):
                seqs = self.lm.model.generate(input_ids=input_ids.to(dev), attention_mask=mask.to(dev),
                                              **decoding.generate_kwargs(), pad_token_id=tok.pad_token_id, **cache)
        finally:
            handle.remove()
        gen = seqs[:, width:].cpu()
        logprobs = rec.finish(gen)
        eos = set(_as_list(self.lm.model.generation_config.eos_token_id)) | {tok.eos_token_id}
        for r, (p, j) in enumerate(rows):
            out = gen[r].tolist()
            stop = next((i for i, t in enumerate(out) if t in eos), None)
            n = len(out) if stop is None else stop + 1
            yield Sample(prompt=prompts[j][1], family=prompts[j][0], prompt_ids=ids[r], token_ids=out[:n],
                         text=tok.decode(out[:n], skip_special_tokens=True), logprobs=logprobs[r, :n].tolist(),
                         finished=stop is not None, candidate=p, seed=seed, meta={"prompt_index": j},
                         alpha=plan_alpha(plans[p]), instruction=instruction)

    def _prefix_cache(self, prefix, rows, kinds, plans, width: int, max_len: int):
        """A static KV cache holding the shared prefix for every row. Computed once per distinct plan, with that
        plan's steering on (a site may steer prompt positions), then copied to the plan's rows."""
        from transformers import DynamicCache, StaticCache

        with steer(self.lm, self.vectors, plans, kinds, prompt_len=width):
            out = self.lm.model(input_ids=prefix, use_cache=True, logits_to_keep=1,
                                **{fastpath.cache_kwarg(self.lm.model): DynamicCache()})
        past = out.cache if getattr(out, "cache", None) is not None else out.past_key_values
        pick = torch.tensor([kinds.index(p) for p, _ in rows], device=prefix.device)
        cache = StaticCache(config=self.lm.model.config, max_cache_len=max_len)
        at = {"cache_position": torch.arange(prefix.shape[1], device=prefix.device)}
        for i, layer in enumerate(past.layers):
            cache.update(layer.keys[pick], layer.values[pick], i, at)
        return cache


def plan_alpha(plan: InterventionPlan) -> float | tuple[float, ...] | None:
    """A plan's strength as a sample reports it: one site -> a float, several -> a tuple, none -> None."""
    alphas = tuple(float(a) for a in plan.alphas)
    return None if not alphas else alphas[0] if len(alphas) == 1 else alphas


def _layout(ids: list[list[int]], shared: int, pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """[shared prefix][pads][rest of the row]: every row ends at the same column (generation appends there);
    shared=0 is plain left padding. Positions come from the mask, so the pads change no token's position."""
    width = max(len(x) for x in ids)
    rows = [x[:shared] + [pad] * (width - len(x)) + x[shared:] for x in ids]
    mask = [[1] * shared + [0] * (width - len(x)) + [1] * (len(x) - shared) for x in ids]
    return torch.tensor(rows), torch.tensor(mask)


class _ChosenLogprobs:
    """log p(chosen token) per step under the raw (steered) logits, holding one step's [B, V] at a time
    instead of every step's logits: each forward call of `generate` receives the token chosen from the
    previous call's logits as its last input column."""

    def __init__(self):
        self.prev: torch.Tensor | None = None  # [B, V] log-softmax of the last call
        self.steps: list[torch.Tensor] = []

    def _take(self, chosen: torch.Tensor) -> None:
        self.steps.append(self.prev.gather(-1, chosen.to(self.prev.device).view(-1, 1)).squeeze(-1).cpu())

    def hook(self, _module, args, kwargs, output):
        ids = kwargs.get("input_ids") if kwargs.get("input_ids") is not None else (args[0] if args else None)
        if self.prev is not None and ids is not None:
            self._take(ids[:, -1])
        logits = output.logits[:, -1].float()
        if not torch.isfinite(logits.amax(-1)).all():  # NaN propagates through the max, +inf is the max
            raise SteeroptError("non-finite logits during generation (NaN/Inf in the steered activations)")
        self.prev = torch.log_softmax(logits, dim=-1)

    def finish(self, gen: torch.Tensor) -> torch.Tensor:
        """[B, steps] for the generated ids `gen` [B, steps]."""
        self._take(gen[:, -1])
        return torch.stack(self.steps, dim=1)[:, :gen.shape[1]]


def _as_list(x) -> list:
    return [] if x is None else list(x) if isinstance(x, (list, tuple)) else [x]
