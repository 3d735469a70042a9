"""Cheap fluency and relevance metrics that keep the two apart (teacher-forced, unsteered model, batched).

Surprisal given the user prompt mixes fluency with relevance: a fluent answer about the steered concept
is unlikely after an unrelated prompt, so it looks "broken". Scoring the same tokens after a NEUTRAL
instruction removes the prompt:

- neutral_surprisal = mean -log p(y | neutral instruction)   (nats/token; fluency, prompt-free)
- neutral_drift     = neutral_surprisal - the same on the model's own unsteered answers (0 = as fluent)
- fluency_proxy     = exp(-max(0, neutral_drift) / fluency_tau) * (1 - rep_3)   in [0, 1]
- relevance_pmi     = mean log p(y | prompt) - mean log p(y | neutral)          (nats/token)
- relevance_proxy   = clip(relevance_pmi / reference PMI of the unsteered answers, 0, 1)

rep_3 enters the fluency proxy because neutral surprisal alone hardly sees fluent-but-looping text
(per-token repetition is cheap for the model). Both proxies need baseline samples for their reference
and are None without them; neutral_surprisal and relevance_pmi never need one.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

from steeropt.engine.teacher_forced import Row, mean_logprob, token_logprobs
from steeropt.types import Sample

NEUTRAL_INSTRUCTION = "Write something."
QUALITY_METRICS = ("neutral_surprisal", "neutral_drift", "fluency_proxy", "relevance_pmi", "relevance_proxy")


def neutral_prompt_ids(lm, instruction: str = NEUTRAL_INSTRUCTION) -> list[int]:
    """The neutral context, rendered exactly like a user prompt (chat template, no special tokens added)."""
    return lm.tokenizer(lm.render(instruction), add_special_tokens=False)["input_ids"]


def neutral_surprisals(lm, samples: Sequence[Sample], *, instruction: str = NEUTRAL_INSTRUCTION,
                       batch_size: int = 16, cache: dict | None = None) -> list[float | None]:
    """Mean -log p(generated tokens | neutral instruction) per sample (None for an empty sample)."""
    ctx = neutral_prompt_ids(lm, instruction)
    cache = {} if cache is None else cache
    keys = [(instruction, tuple(x.token_ids)) for x in samples]
    todo = sorted({k for k in keys if k not in cache})
    lps = token_logprobs(lm, [Row(ctx, list(t)) for _, t in todo], batch_size=batch_size)
    for k, lp in zip(todo, lps):
        m = mean_logprob(lp)
        cache[k] = None if m is None else -m
    return [cache[k] for k in keys]


def quality_metrics(neutral: float | None, surprisal: float | None, rep_3: float | None,
                    ref: dict | None, tau: float = 2.0) -> dict:
    """The five metrics of one sample from its neutral and prompt surprisals (same tokens) and rep_3.

    ref: {"neutral": mean neutral surprisal, "pmi": mean relevance PMI} of the unsteered baseline, or None.
    """
    pmi = None if neutral is None or surprisal is None else neutral - surprisal
    drift = None if neutral is None or not ref or ref.get("neutral") is None else neutral - ref["neutral"]
    fluency = None if drift is None else math.exp(-max(0.0, drift) / tau) * (1.0 - (rep_3 or 0.0))
    ref_pmi = (ref or {}).get("pmi")
    relevance = None if pmi is None or not ref_pmi or ref_pmi <= 0 else min(1.0, max(0.0, pmi / ref_pmi))
    return {"neutral_surprisal": neutral, "neutral_drift": drift, "fluency_proxy": fluency,
            "relevance_pmi": pmi, "relevance_proxy": relevance}


def quality_reference(neutral: Sequence[float | None], surprisal: Sequence[float | None]) -> dict:
    """Means over the baseline samples: neutral surprisal and relevance PMI (None when nothing is present)."""
    ns = [n for n in neutral if n is not None]
    pmis = [n - s for n, s in zip(neutral, surprisal) if n is not None and s is not None]
    return {"neutral": sum(ns) / len(ns) if ns else None, "pmi": sum(pmis) / len(pmis) if pmis else None}


class Quality:
    """The quality metrics of many batches; caches every unsteered score (baselines repeat every trial)."""

    def __init__(self, lm, *, instruction: str = NEUTRAL_INSTRUCTION, tau: float = 2.0, batch_size: int = 16):
        self.lm, self.instruction, self.tau, self.batch_size = lm, instruction, tau, batch_size
        self._neutral: dict = {}

    def reference(self, baseline: Sequence[Sample], surprisals: Sequence[float | None]) -> dict:
        """surprisals: the baseline samples' unsteered surprisals given their prompts (Tier1 caches them)."""
        return quality_reference(self.neutral(baseline), surprisals)

    def neutral(self, samples: Sequence[Sample]) -> list[float | None]:
        return neutral_surprisals(self.lm, samples, instruction=self.instruction, batch_size=self.batch_size,
                                  cache=self._neutral)

    def compute(self, samples: Sequence[Sample], surprisals: Sequence[float | None], rep3s: Sequence[float | None],
                baseline: Sequence[Sample] | None = None,
                baseline_surprisals: Sequence[float | None] | None = None) -> list[dict]:
        """Per sample the QUALITY_METRICS; `surprisals` (and `baseline_surprisals`, one per baseline sample) are
        unsteered surprisals given the prompts."""
        ref = self.reference(baseline, baseline_surprisals) if baseline else None
        return [quality_metrics(n, s, r, ref, self.tau)
                for n, s, r in zip(self.neutral(samples), surprisals, rep3s)]
