"""Teacher-forced scoring of given token sequences: surprisal, KL(steered || unsteered), preference / utility.

Nothing here generates. Every pass is one batched forward over left-padded rows
`prompt_ids + target_ids`, with position ids taken from the attention mask so padding does not shift
positions, and only the logits of the last max(len(target))+1 positions are computed; the prompts' shared
opening is run once per plan and reused through the KV cache (the chat template's system turn is ~40% of a
quickstart row).
Steered passes run inside `steeropt.engine.interventions.steer(...)` with one plan per row, laid out like
generation (prompts left-padded to one width, targets from that column on) so positions
"prompt"/"generated" steer exactly the tokens they steered while generating.
"""
from __future__ import annotations

from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from steeropt.engine.fastpath import cache_kwarg, shared_prefix
from steeropt.engine.interventions import steer


@dataclass
class Row:
    """One teacher-forced sequence: score `target_ids` given `prompt_ids`; `plan` indexes the plans when steered."""

    prompt_ids: list[int]
    target_ids: list[int]
    plan: int = 0


def stop_ids(lm) -> set[int]:
    """EOS and pad ids of the model (stripped before content metrics)."""
    ids: set[int] = set()
    tok = lm.tokenizer
    for x in (tok.eos_token_id, tok.pad_token_id, getattr(getattr(lm.model, "generation_config", None), "eos_token_id", None)):
        if isinstance(x, int):
            ids.add(x)
        elif isinstance(x, (list, tuple)):
            ids.update(int(i) for i in x)
    return ids


def _chunks(rows: Sequence[Row], batch_size: int) -> list[list[int]]:
    """Row indices in chunks of batch_size, ordered by plan so each chunk touches few plans."""
    order = sorted(range(len(rows)), key=lambda i: rows[i].plan)
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


@torch.no_grad()
def _forward(lm, rows: Sequence[Row], plans=None, vectors=None) -> tuple[torch.Tensor, int]:
    """Log-probs of the next token at the positions predicting each target token, unsteered (plans=None) or
    steered by plans[row.plan].

    Layout as in generation: prompts left-padded to a common width W, targets appended from column W,
    right-padded (masked) to the longest target G. The prompts' shared opening (the chat template's system
    turn, or a whole neutral instruction) goes first and its KV cache is computed once per plan, the pads
    sit after it: [shared][pads][rest of prompt][target][pads]. Returns (logp [B, G, V], W); row b's target
    token j is scored by logp[b, j].
    """
    pad = lm.tokenizer.pad_token_id if lm.tokenizer.pad_token_id is not None else 0
    W = max(len(r.prompt_ids) for r in rows)
    G = max(max(len(r.target_ids) for r in rows), 1)
    kinds = sorted({r.plan for r in rows}) if plans is not None else [0]
    shared = shared_prefix([r.prompt_ids for r in rows]) if len(rows) > len(kinds) else 0
    ids = torch.full((len(rows), W + G), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), W + G), dtype=torch.long)
    for b, r in enumerate(rows):
        p, t = len(r.prompt_ids), len(r.target_ids)
        ids[b, :shared] = torch.tensor(r.prompt_ids[:shared], dtype=torch.long)
        ids[b, W - p + shared : W + t] = torch.tensor(r.prompt_ids[shared:] + r.target_ids, dtype=torch.long)
        mask[b, :shared] = 1
        mask[b, W - p + shared : W + t] = 1
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    dev = next(lm.model.parameters()).device
    kw = dict(attention_mask=mask.to(dev), position_ids=pos[:, shared:].to(dev), logits_to_keep=G + 1)
    if shared:
        from transformers import DynamicCache

        first = [next(b for b, r in enumerate(rows) if plans is None or r.plan == k) for k in kinds]
        with _steered(lm, vectors, plans, [rows[b].plan for b in first], W):
            out = lm.model(input_ids=ids[first, :shared].to(dev), use_cache=True, logits_to_keep=1,
                           **{cache_kwarg(lm.model): DynamicCache()})
        past = out.cache if getattr(out, "cache", None) is not None else out.past_key_values
        pick = torch.tensor([kinds.index(r.plan) if plans is not None else 0 for r in rows], device=dev)
        kw[cache_kwarg(lm.model)] = DynamicCache(ddp_cache_data=[(layer.keys[pick], layer.values[pick]) for layer in past.layers])
        kw["use_cache"] = True
    else:
        kw["use_cache"] = False
    with _steered(lm, vectors, plans, [r.plan for r in rows], W):
        logits = lm.model(input_ids=ids[:, shared:].to(dev), **kw).logits
    return torch.log_softmax(logits[:, -(G + 1) : -1, :].float(), dim=-1), W


def _target_logprobs(logp: torch.Tensor, rows: Sequence[Row]) -> list[list[float]]:
    out = []
    for b, r in enumerate(rows):
        if not r.target_ids:
            out.append([])
            continue
        t = torch.tensor(r.target_ids, dtype=torch.long, device=logp.device)
        out.append(logp[b, : len(t), :].gather(-1, t[:, None])[:, 0].tolist())
    return out


@contextmanager
def _steered(lm, vectors, plans, row_plans: Sequence[int], prompt_len: int):
    """Steering for one forward call's rows (plans=None: none); prompt_len is the padded prompt width, as in generation."""
    if plans is None:
        yield
        return

    used = sorted(set(row_plans))
    local = {p: i for i, p in enumerate(used)}
    with steer(lm, vectors, [plans[p] for p in used], [local[p] for p in row_plans], prompt_len=prompt_len):
        yield


def token_logprobs(
    lm, rows: Sequence[Row], *, batch_size: int = 16, plans=None, vectors=None
) -> list[list[float]]:
    """log p(target token | prefix) for every row, unsteered (plans=None) or steered by plans[row.plan]."""
    out: list[list[float] | None] = [None] * len(rows)
    for idx in _chunks(rows, batch_size):
        sub = [rows[i] for i in idx]
        logp, _ = _forward(lm, sub, plans, vectors)
        for i, lp in zip(idx, _target_logprobs(logp, sub)):
            out[i] = lp
    return out  # type: ignore[return-value]


def next_token_logprobs(lm, rows: Sequence[Row], *, plans=None, vectors=None) -> list[torch.Tensor]:
    """Full next-token log-distributions at each target position, `[len(target), V]` per row, unsteered
    (plans=None) or steered by plans[row.plan]; one batched pass (callers keep the unsteered ones to reuse)."""
    logp, _ = _forward(lm, rows, plans, vectors)
    return [logp[b, : len(r.target_ids)] for b, r in enumerate(rows)]


def surprisal_and_kl(
    lm, rows: Sequence[Row], *, batch_size: int = 16, kl_positions: int = 8, plans=None, vectors=None
) -> list[tuple[float | None, float | None]]:
    """(surprisal, kl) per row.

    surprisal = mean -log p(target) under the UNSTEERED model (None for an empty target).
    kl = mean over the first `kl_positions` target positions of KL(p_steered || p_unsteered) of the full
    next-token distributions, the steered pass teacher-forced on the same tokens with plans[row.plan]
    active (None when plans is None, kl_positions is 0 or the target is empty).
    """
    out: list[tuple[float | None, float | None]] = [(None, None)] * len(rows)
    do_kl = plans is not None and kl_positions > 0
    for idx in _chunks(rows, batch_size):
        sub = [rows[i] for i in idx]
        logp_u, _ = _forward(lm, sub)
        tok = _target_logprobs(logp_u, sub)
        kls: list[float | None] = [None] * len(sub)
        if do_kl:
            # Only the first k positions matter: the steered pass stops there.
            logp_s, _ = _forward(lm, [Row(r.prompt_ids, r.target_ids[:kl_positions], r.plan) for r in sub], plans, vectors)
            for b, r in enumerate(sub):
                k = min(len(r.target_ids), kl_positions)
                if k == 0:
                    continue
                ps, pu = logp_s[b, :k], logp_u[b, :k]
                kls[b] = float((ps.exp() * (ps - pu)).sum(-1).clamp(min=0).mean())
            del logp_s
        for j, i in enumerate(idx):
            out[i] = (float(-sum(tok[j]) / len(tok[j])) if tok[j] else None, kls[j])
    return out


def completion_rows(lm, prompt_ids: Sequence[list[int]], completions: Sequence[str]) -> tuple[list[Row], list[tuple[int, int]]]:
    """Rows for every (prompt, completion) pair and their (prompt index, completion index)."""
    comp_ids = [lm.tokenizer(c, add_special_tokens=False)["input_ids"] for c in completions]
    rows, keys = [], []
    for pi, p in enumerate(prompt_ids):
        for ci, c in enumerate(comp_ids):
            rows.append(Row(list(p), list(c)))
            keys.append((pi, ci))
    return rows, keys


def mean_logprob(lps: Sequence[float]) -> float | None:
    """Length-normalised log-likelihood of one completion (so long and short completions compare)."""
    return float(sum(lps) / len(lps)) if lps else None


def preference_utility(
    lm,
    prompts: Sequence[list[int]],
    positive: Sequence[str],
    negative: Sequence[str],
    plans,
    vectors,
    *,
    batch_size: int = 16,
    cache: dict | None = None,
) -> dict[tuple[int, int], dict[str, float | None]]:
    """Preference and utility log-odds per (plan index, prompt index), without generating.

    With mlp = mean per-token log-likelihood of a completion after the prompt:
      preference      = mean mlp_steered(positive) - mean mlp_steered(negative)
      preference_base = the same under the unsteered model
      utility         = mean mlp_steered(all completions) - mean mlp_unsteered(all completions)
    (utility < 0: steering makes ordinary text less likely). `cache` keeps unsteered values across calls.
    """
    comps = list(positive) + list(negative)
    n_pos = len(positive)
    base_rows, keys = completion_rows(lm, prompts, comps)
    cache = {} if cache is None else cache
    todo = [i for i, r in enumerate(base_rows) if (tuple(r.prompt_ids), tuple(r.target_ids)) not in cache]
    for i, lp in zip(todo, token_logprobs(lm, [base_rows[i] for i in todo], batch_size=batch_size)):
        r = base_rows[i]
        cache[(tuple(r.prompt_ids), tuple(r.target_ids))] = mean_logprob(lp)
    base = [cache[(tuple(r.prompt_ids), tuple(r.target_ids))] for r in base_rows]
    steered_rows = [Row(r.prompt_ids, r.target_ids, plan=p) for p in range(len(plans)) for r in base_rows]
    steered = [mean_logprob(lp) for lp in token_logprobs(lm, steered_rows, batch_size=batch_size, plans=plans, vectors=vectors)]

    def _m(xs):
        xs = [x for x in xs if x is not None]
        return sum(xs) / len(xs) if xs else None

    out: dict[tuple[int, int], dict[str, float | None]] = {}
    n = len(base_rows)
    for p in range(len(plans)):
        for pi in range(len(prompts)):
            sel = [j for j, (a, _) in enumerate(keys) if a == pi]
            s = {keys[j][1]: steered[p * n + j] for j in sel}
            b = {keys[j][1]: base[j] for j in sel}
            sp, sn = _m([s[c] for c in s if c < n_pos]), _m([s[c] for c in s if c >= n_pos])
            bp, bn = _m([b[c] for c in b if c < n_pos]), _m([b[c] for c in b if c >= n_pos])
            sa, ba = _m(list(s.values())), _m(list(b.values()))
            out[(p, pi)] = {
                "preference": None if sp is None or sn is None else sp - sn,
                "preference_base": None if bp is None or bn is None else bp - bn,
                "utility": None if sa is None or ba is None else sa - ba,
            }
    return out
