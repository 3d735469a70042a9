"""Judge in-process with a transformers model, scored from its next-token distribution.

One forward pass over the rendered judge prompt (chat template + the rubric's answer_prefix)
gives the distribution of the first rating token. Ratings longer than one token (0-100 with a
tokenizer that splits digits, like SmolLM2's) are scored exactly by following the digit tree:
p(85) = p("8") * p("5" | "8") * p(end | "85"), one more batched pass per digit level for the
prefixes holding mass. The score is the probability-weighted mean rating, missing when valid
ratings hold less than min_valid_mass.

A 135M judge (the embedded default) is weak: it separates gibberish from fluent text better than
it recognises concepts. For real studies point the judge at a stronger model: the openai backend
with a vLLM / llama.cpp server (`base_url`, `model`), or this backend with `model:` set to
another Hugging Face model directory.
"""
from __future__ import annotations

import json

import torch

from steeropt.judges.base import Judge, JudgeRequest
from steeropt.judges.cache import JudgeCache
from steeropt.judges.config import JudgeSpec, Rubric
from steeropt.judges.scoring import Rating, weighted_rating

EXPAND_MIN = 1e-3  # digit prefixes with less mass than this end where they are (negligible error)


class LocalJudge(Judge):
    backend = "local"

    def __init__(self, spec: JudgeSpec, cache: JudgeCache | None, lm=None):
        super().__init__(spec, cache)
        if lm is None:
            from steeropt.models import load_model

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

    def _prompt_ids(self, rubric: Rubric, req: JudgeRequest) -> list[int]:
        tok = self.lm.tokenizer
        msgs = rubric.messages(req.prompt, req.response, req.concept)
        if getattr(tok, "chat_template", None):
            text = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
        else:
            text = "\n\n".join(m["content"] for m in msgs) + "\n\n"
        return tok(text + rubric.answer_prefix, add_special_tokens=False).input_ids

    @torch.no_grad()
    def _next_probs(self, rows: list[list[int]]) -> torch.Tensor:
        """Next-token probabilities after each row of ids, batched with left padding. Returns [rows, vocab]."""
        out = []
        pad = self.lm.tokenizer.pad_token_id or 0
        device = next(self.lm.model.parameters()).device
        bs = self.spec.batch_size
        for i in range(0, len(rows), bs):
            chunk = rows[i:i + bs]
            width = max(len(r) for r in chunk)
            ids = torch.tensor([[pad] * (width - len(r)) + r for r in chunk], device=device)
            mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in chunk], device=device)
            pos = (mask.cumsum(-1) - 1).clamp(min=0)
            logits = self.lm.model(input_ids=ids, attention_mask=mask, position_ids=pos,
                                   use_cache=False, logits_to_keep=1).logits[:, -1].float()
            self.stats.forward_passes += 1
            out.append(torch.softmax(logits, -1).cpu())
        return torch.cat(out)

    def _distributions(self, prompts: list[list[int]], rubric: Rubric) -> list[dict[int, float]]:
        """Probability of each valid rating per prompt (sums to <= 1)."""
        lo, hi = rubric.scale.min, rubric.scale.max
        dists: list[dict[int, float]] = [dict() for _ in prompts]
        # frontier: (prompt index, ids so far, rating prefix string, probability of the prefix)
        frontier = [(k, p, "", 1.0) for k, p in enumerate(prompts)]
        while frontier:
            probs = self._next_probs([ids for _, ids, _, _ in frontier])
            nxt = []
            for (k, ids, prefix, p), row in zip(frontier, probs):
                table = self._cont if prefix else self._first
                if prefix:
                    # mass that ends the number here: anything but another digit
                    end = 1.0 - float(row[self._cont_ids].sum())
                    dists[k][int(prefix)] = dists[k].get(int(prefix), 0.0) + p * end
                for tid, s in table.items():
                    q = p * float(row[tid])
                    num = prefix + s
                    if q <= 0 or (len(num) > 1 and num[0] == "0") or int(num) > hi:
                        continue
                    if num != "0" and int(num) * 10 <= hi and q >= EXPAND_MIN:
                        nxt.append((k, ids + [tid], num, q))
                    elif int(num) >= lo:
                        dists[k][int(num)] = dists[k].get(int(num), 0.0) + q
            frontier = nxt
        return [{v: p for v, p in d.items() if lo <= v <= hi} for d in dists]

    def _rate(self, requests: list[JudgeRequest]) -> list[tuple[Rating, str | None]]:
        out: list[tuple[Rating, str | None] | None] = [None] * len(requests)
        by_rubric: dict[str, list[int]] = {}
        for i, r in enumerate(requests):
            by_rubric.setdefault(r.rubric, []).append(i)
        for name, idx in by_rubric.items():
            rubric = self.spec.rubrics[name]
            prompts = [self._prompt_ids(rubric, requests[i]) for i in idx]
            for i, dist in zip(idx, self._distributions(prompts, rubric)):
                top = dict(sorted(dist.items(), key=lambda kv: -kv[1])[:5])
                raw = json.dumps({str(v): round(p, 4) for v, p in top.items()})
                out[i] = (weighted_rating(dist, rubric), raw)
        return out  # type: ignore[return-value]


def _is_number(s: str) -> bool:
    return s.isascii() and s.isdigit()
