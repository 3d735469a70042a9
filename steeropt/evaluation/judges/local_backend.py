"""Judge in-process with a transformers model, scored from its next-token distribution.

One forward pass over the rendered judge prompt (chat template + the rubric's answer_prefix)
gives the distribution of the first rating token. Ratings longer than one token (0-100 with a
tokenizer that splits digits, like SmolLM2's) are scored exactly by following the digit tree:
p(85) = p("8") * p("5" | "8") * p(end | "85"): one more batched pass per digit level for the
prefixes holding mass, reusing the prompt's KV cache (one new token per row). The score is the
probability-weighted mean rating, missing when valid ratings hold less than min_valid_mass.

Yes/no rubrics (scale 0..1) take a faster path: the rendered prompt up to the line holding the first
placeholder (chat template, system message, instructions) is the same for every sample, so its KV
cache is computed once per rubric and shared; only the sample-specific rest (left-padded, sorted by
length, batch_size rows per pass) goes through the model. Rows whose tokens do not start with the
shared prefix (a tokenizer merging across the cut) take the plain path. Rows that also share the text up to the
line holding {response} (the same concept or prompt: a study's batch judges one concept, every prompt once per
trial) extend that cache once per group of at least batch_size rows, so their tails start at the response
(measured on the quickstart's concept_yn: 40 of 138 tail tokens, ~20% of that rubric's time).

A 135M judge (the embedded default) is weak: it separates gibberish from fluent text better than
it recognises concepts. For real studies point the judge at a stronger model: the openai backend
with a vLLM / llama.cpp server (`base_url`, `model`), or this backend with `model:` set to
another Hugging Face model directory.
"""
from __future__ import annotations

import json

import torch

from steeropt.engine.fastpath import cache_kwarg
from steeropt.engine.models import load_model
from steeropt.evaluation.judges.base import Judge, JudgeRequest
from steeropt.evaluation.judges.cache import JudgeCache
from steeropt.evaluation.judges.config import JudgeSpec, Rubric
from steeropt.evaluation.judges.scoring import Rating, weighted_rating

EXPAND_MIN = 1e-3  # digit prefixes with less mass than this end where they are (negligible error)


class LocalJudge(Judge):
    backend = "local"

    def __init__(self, spec: JudgeSpec, cache: JudgeCache | None, lm=None, prefix_cache: bool = True):
        super().__init__(spec, cache)
        self.prefix_cache = prefix_cache  # False: every yes/no sample gets the plain full-prompt pass
        self._prefix_kv: dict[tuple[int, ...], list] = {}  # shared prefix ids -> its per-layer (keys, values)
        if lm is None:
            lm = load_model(spec.model)
        self.lm = lm
        tok = lm.tokenizer
        vocab = [tok.decode([i]) for i in range(len(tok))]
        # first rating token: any token that is a number once stripped ("7", " 7");
        # continuation tokens: bare digits only ("1 5" is not 15).
        self._first = {i: s.strip() for i, s in enumerate(vocab) if _is_number(s.strip())}
        self._cont = {i: s for i, s in enumerate(vocab) if _is_number(s)}
        self._cont_ids = torch.tensor(sorted(self._cont))

    @property
    def identity(self) -> str:
        return f"local:{self.lm.name}@{str(self.lm.sha256)[:16]}"

    def _prompt_text(self, rubric: Rubric, prompt: str, response: str, concept: str) -> str:
        tok = self.lm.tokenizer
        msgs = rubric.messages(prompt, response, concept)
        if getattr(tok, "chat_template", None):
            text = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
        else:
            text = "\n\n".join(m["content"] for m in msgs) + "\n\n"
        return text + rubric.answer_prefix

    def _prompt_ids(self, rubric: Rubric, req: JudgeRequest) -> list[int]:
        text = self._prompt_text(rubric, req.prompt, req.response, req.concept)
        return self.lm.tokenizer(text, add_special_tokens=False).input_ids

    def _shared_prefix(self, rubric: Rubric) -> list[int]:
        """Token ids of the rendered prompt up to the line holding the first placeholder (same for every sample)."""
        mark = "\x00"
        return self._ids_before(self._prompt_text(rubric, mark, mark, mark), mark)

    def _head(self, rubric: Rubric, req: JudgeRequest) -> list[int]:
        """Token ids of this request's rendered prompt up to the line holding {response}: the same for every
        request with the same prompt and concept."""
        mark = "\x00"
        return self._ids_before(self._prompt_text(rubric, req.prompt, mark, req.concept), mark)

    def _ids_before(self, text: str, mark: str) -> list[int]:
        cut = text.rfind("\n", 0, text.index(mark)) + 1  # cut at a line start: tokenizers rarely merge across "\n"
        return self.lm.tokenizer(text[:cut], add_special_tokens=False).input_ids if cut > 0 else []

    @torch.no_grad()
    def _prefix_cache_for(self, prefix: list[int]) -> list:
        key = tuple(prefix)
        if key not in self._prefix_kv:
            device = next(self.lm.model.parameters()).device
            ids = torch.tensor([prefix], device=device)
            out = self.lm.model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=True, logits_to_keep=1)
            self.stats.forward_passes += 1
            self._prefix_kv[key] = [(layer.keys, layer.values) for layer in out.past_key_values.layers]
        return self._prefix_kv[key]

    @torch.no_grad()
    def _extend(self, kv: list, ids: list[int], past: int) -> list:
        """The per-layer (keys, values) of a prefix `past` tokens long (kv) followed by `ids`, in one pass."""
        from transformers.cache_utils import DynamicCache

        device = next(self.lm.model.parameters()).device
        mask = torch.ones(1, past + len(ids), dtype=torch.long, device=device)
        _, cache = self._forward(torch.tensor([ids], device=device), mask, DynamicCache(ddp_cache_data=list(kv)))
        return [(layer.keys, layer.values) for layer in cache.layers]

    def _distributions_prefixed(self, prompts: list[list[int]], rubric: Rubric,
                                heads: list[list[int]] | None = None) -> list[dict[int, float]]:
        """Like _distributions, but the shared prefix's KV cache is computed once and each pass holds only suffixes.
        `heads[i]`: prompt i's ids up to its response line; rows sharing a longer head share its cache too."""
        prefix = self._shared_prefix(rubric)
        n = len(prefix)
        fits = [i for i, p in enumerate(prompts) if n and len(p) > n and p[:n] == prefix]
        rest = sorted(set(range(len(prompts))) - set(fits))
        dists: list[dict[int, float]] = [dict() for _ in prompts]
        groups: dict[tuple[int, ...], list[int]] = {}
        for i in fits:
            h = heads[i] if heads else prefix
            ok = len(h) > n and len(prompts[i]) > len(h) and prompts[i][:len(h)] == h
            groups.setdefault(tuple(h) if ok else tuple(prefix), []).append(i)
        for head, rows in list(groups.items()):
            # a group's own cache pays when it fills a pass (a study judges each prompt once per trial of a
            # batch); smaller groups would only split passes: their tails start at the rubric prefix
            if len(head) > n and len(rows) < max(2, self.spec.batch_size):
                del groups[head]
                groups.setdefault(tuple(prefix), []).extend(rows)
        base = self._prefix_cache_for(prefix) if fits else None
        for head, rows in groups.items():
            kv = base if len(head) == n else self._extend(base, list(head[n:]), n)
            self._score_tails(prompts, rows, len(head), kv, rubric, dists)
        if rest:
            for i, d in zip(rest, self._distributions([prompts[i] for i in rest], rubric)):
                dists[i] = d
        lo, hi = rubric.scale.min, rubric.scale.max
        return [{v: p for v, p in d.items() if lo <= v <= hi} for d in dists]

    def _score_tails(self, prompts, fits: list[int], n: int, kv: list, rubric: Rubric, dists) -> None:
        """Rows `fits` of prompts all start with the same n tokens whose cache is kv: batch their tails."""
        from transformers.cache_utils import DynamicCache

        if fits:
            pad = self.lm.tokenizer.pad_token_id or 0
            device = next(self.lm.model.parameters()).device
            fits = sorted(fits, key=lambda i: len(prompts[i]))  # similar lengths per pass: little padding
            bs = self.spec.batch_size
            for j in range(0, len(fits), bs):
                chunk = fits[j:j + bs]
                tails = [prompts[i][n:] for i in chunk]
                width = max(len(t) for t in tails)
                # left padding sits between prefix and tail, masked out; _forward counts positions from the mask
                ids = torch.tensor([[pad] * (width - len(t)) + t for t in tails], device=device)
                mask = torch.tensor([[1] * n + [0] * (width - len(t)) + [1] * len(t) for t in tails], device=device)
                # expand() is a view; the cache's first update concatenates, so the shared prefix is never written
                cache = DynamicCache(ddp_cache_data=[(k.expand(len(chunk), -1, -1, -1), v.expand(len(chunk), -1, -1, -1))
                                                     for k, v in kv])
                probs, cache = self._forward(ids, mask, cache)
                sub: list[dict[int, float]] = [dict() for _ in chunk]
                self._follow([(r, "", 1.0, r) for r in range(len(chunk))], probs, cache, mask, sub, rubric)
                for i, d in zip(chunk, sub):
                    dists[i] = d

    @torch.no_grad()
    def _forward(self, ids: torch.Tensor, mask: torch.Tensor, cache=None):
        """Next-token probabilities [rows, vocab] and the KV cache. ids [rows, new], mask [rows, past + new]."""
        pos = (mask.cumsum(-1) - 1).clamp(min=0)[:, -ids.shape[1]:]
        out = self.lm.model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True, logits_to_keep=1,
                            **({cache_kwarg(self.lm.model): cache} if cache is not None else {}))
        self.stats.forward_passes += 1
        past = out.cache if getattr(out, "cache", None) is not None else out.past_key_values
        return torch.softmax(out.logits[:, -1].float(), -1), past

    def _distributions(self, prompts: list[list[int]], rubric: Rubric) -> list[dict[int, float]]:
        """Probability of each valid rating per prompt (sums to <= 1); prompts are token id lists."""
        dists: list[dict[int, float]] = [dict() for _ in prompts]
        pad = self.lm.tokenizer.pad_token_id or 0
        device = next(self.lm.model.parameters()).device
        bs = self.spec.batch_size
        for i in range(0, len(prompts), bs):
            chunk = prompts[i:i + bs]
            width = max(len(r) for r in chunk)
            ids = torch.tensor([[pad] * (width - len(r)) + r for r in chunk], device=device)
            mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in chunk], device=device)
            probs, cache = self._forward(ids, mask)
            rows = [(i + r, "", 1.0, r) for r in range(len(chunk))]
            self._follow(rows, probs, cache, mask, dists, rubric)
        lo, hi = rubric.scale.min, rubric.scale.max
        return [{v: p for v, p in d.items() if lo <= v <= hi} for d in dists]

    def _follow(self, rows, probs, cache, mask, dists, rubric) -> None:
        """Add each row's ratings to dists; extend prefixes that can still grow by one digit.

        rows: (prompt index, rating prefix so far, probability of the prefix, row in probs/cache).
        """
        hi = rubric.scale.max
        grow = []  # (prompt index, new prefix, its probability, parent row, token id)
        for k, prefix, p, row in rows:
            dist = probs[row]
            if prefix:  # the number ends here unless another digit follows
                end = 1.0 - float(dist[self._cont_ids].sum())
                dists[k][int(prefix)] = dists[k].get(int(prefix), 0.0) + p * end
            for tid, s in (self._cont if prefix else self._first).items():
                q, num = p * float(dist[tid]), prefix + s
                if q <= 0 or (len(num) > 1 and num[0] == "0") or int(num) > hi:
                    continue
                if num != "0" and int(num) * 10 <= hi and q >= EXPAND_MIN:
                    grow.append((k, num, q, row, tid))
                else:
                    dists[k][int(num)] = dists[k].get(int(num), 0.0) + q
        step = 2 * self.spec.batch_size  # rows per pass: each copies the prompt's KV cache
        for j in range(0, len(grow), step):
            part = grow[j:j + step]
            idx = torch.tensor([g[3] for g in part], device=mask.device)
            sub_cache = _select(cache, idx)
            sub_mask = torch.cat([mask[idx], torch.ones(len(part), 1, dtype=mask.dtype, device=mask.device)], 1)
            ids = torch.tensor([[g[4]] for g in part], device=mask.device)
            sub_probs, sub_cache = self._forward(ids, sub_mask, sub_cache)
            self._follow([(g[0], g[1], g[2], r) for r, g in enumerate(part)], sub_probs, sub_cache, sub_mask,
                         dists, rubric)

    def _rate(self, requests: list[JudgeRequest]) -> list[tuple[Rating, str | None]]:
        if not self.spec.threads:
            return self._rate_all(requests)
        before = torch.get_num_threads()  # a process-wide setting: restore it for the steered model
        torch.set_num_threads(self.spec.threads)
        try:
            return self._rate_all(requests)
        finally:
            torch.set_num_threads(before)

    def _rate_all(self, requests: list[JudgeRequest]) -> list[tuple[Rating, str | None]]:
        out: list[tuple[Rating, str | None] | None] = [None] * len(requests)
        by_rubric: dict[str, list[int]] = {}
        for i, r in enumerate(requests):
            by_rubric.setdefault(r.rubric, []).append(i)
        for name, idx in by_rubric.items():
            rubric = self.spec.rubrics[name]
            prompts = [self._prompt_ids(rubric, requests[i]) for i in idx]
            # yes/no: one forward per row, no digit tree, so the prefix KV cache can be shared cheaply
            if (rubric.scale.min, rubric.scale.max) == (0, 1) and self.prefix_cache:
                dists = self._distributions_prefixed(prompts, rubric, [self._head(rubric, requests[i]) for i in idx])
            else:
                dists = self._distributions(prompts, rubric)
            for i, dist in zip(idx, dists):
                top = dict(sorted(dist.items(), key=lambda kv: -kv[1])[:5])
                raw = json.dumps({str(v): round(p, 4) for v, p in top.items()})
                out[i] = (weighted_rating(dist, rubric), raw)
        return out  # type: ignore[return-value]


def _select(cache, idx: torch.Tensor):
    """A new KV cache holding rows idx (repeats allowed) of `cache`; the parent stays intact."""
    from transformers.cache_utils import DynamicCache

    return DynamicCache(ddp_cache_data=[(layer.keys[idx], layer.values[idx]) for layer in cache.layers])


def _is_number(s: str) -> bool:
    return s.isascii() and s.isdigit()
