"""Tier 1: every cheap metric of every sample, batched (model-free metrics + teacher-forced scoring).

Usable alone (benchmarks, notebooks):

    concept = ConceptInfo("wedding", "weddings and marriage", keywords=["wedding*", "re:\\\\bbrid(e|al)\\\\w*"])
    rows = Tier1(lm, concept).compute(samples, plans, baseline=baseline, vectors=vectors)
    rows[0]["rep_3"], rows[0]["surprisal_drift"], rows[0]["kl"]
"""
from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from steeropt.errors import SteeroptError
from steeropt.evaluation.objectives import metrics as M
from steeropt.evaluation.objectives.config import FORCED_METRICS, Tier1Settings
from steeropt.evaluation.objectives.quality import Quality
from steeropt.engine.teacher_forced import Row, preference_utility, stop_ids, surprisal_and_kl
from steeropt.types import InterventionPlan, Sample


@dataclass
class ConceptInfo:
    """What the study steers towards. Keywords: plain words/phrases or "re:<regex>" (see metrics.compile_keywords)."""

    name: str
    description: str = ""
    keywords: list[str] = field(default_factory=list)
    positive_completions: list[str] = field(default_factory=list)  # concept-positive answers, for preference
    negative_completions: list[str] = field(default_factory=list)  # matched neutral answers

    @classmethod
    def from_concept(cls, c) -> ConceptInfo:
        """From anything with these attributes (steeropt.specs.concepts.Concept, the study's ConceptSpec)."""
        return cls(c.name, getattr(c, "description", "") or "", list(getattr(c, "keywords", []) or []),
                   list(getattr(c, "positive_completions", []) or []), list(getattr(c, "negative_completions", []) or []))

    @property
    def judge_text(self) -> str:
        """What the judge is told the concept is."""
        return self.description or self.name


class Tier1:
    """Computes tier-1 metrics; caches the unsteered scores of baseline samples and completions."""

    def __init__(self, lm, concept: ConceptInfo, settings: Tier1Settings | None = None):
        self.lm, self.concept = lm, concept
        self.settings = settings or Tier1Settings()
        try:
            self.patterns = M.compile_keywords(concept.keywords)
        except (re.error, ValueError) as e:  # a bad "re:" regex, or regex characters in a plain keyword
            raise SteeroptError(f"concept '{concept.name}': invalid keyword: {e}") from None
        self.stop = stop_ids(lm)
        self._base_surprisal: dict[tuple, float | None] = {}  # (prompt_ids, token_ids) -> surprisal
        self._completion_cache: dict = {}
        self.preference = True  # the completion-preference pass; the objective stack turns it off when unused
        self.teacher_forced = True  # surprisal, KL and quality passes; the objective stack turns them off when unused
        # neutral-context fluency and relevance PMI (quality.py)
        self.quality = Quality(lm, instruction=self.settings.neutral_instruction, tau=self.settings.fluency_tau,
                               batch_size=self.settings.batch_size)

    def scoring_ids(self, x: Sample) -> list[int]:
        """The context a sample is scored in: its prompt as the user gave it. A prompted-arm sample was generated
        after a system instruction; its relevance and surprisal are about the user's prompt, not the instruction."""
        if not x.instruction:
            return list(x.prompt_ids)
        return self.lm.tokenizer(self.lm.render(x.prompt), add_special_tokens=False)["input_ids"]

    def baseline_reference(self, baseline: Sequence[Sample]) -> dict:
        """Mean unsteered surprisal of the baseline (alpha = 0) samples per prompt, per family and overall."""
        s = self.settings
        keys = [(tuple(b.prompt_ids), tuple(b.token_ids)) for b in baseline]
        todo = sorted({k for k in keys if k not in self._base_surprisal})
        scored = surprisal_and_kl(self.lm, [Row(list(p), list(t)) for p, t in todo], batch_size=s.batch_size, kl_positions=0)
        for k, (sur, _) in zip(todo, scored):
            self._base_surprisal[k] = sur
        ref: dict = {"prompt": {}, "family": {}, "all": []}
        for b, k in zip(baseline, keys):
            v = self._base_surprisal[k]
            if v is None:
                continue
            ref["prompt"].setdefault((b.family, b.prompt), []).append(v)
            ref["family"].setdefault(b.family, []).append(v)
            ref["all"].append(v)
        mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
        return {
            "prompt": {k: mean(v) for k, v in ref["prompt"].items()},
            "family": {k: mean(v) for k, v in ref["family"].items()},
            "all": mean(ref["all"]) if ref["all"] else None,
        }

    def compute(
        self,
        samples: Sequence[Sample],
        plans: Sequence[InterventionPlan] | None = None,
        baseline: Sequence[Sample] | None = None,
        vectors=None,
    ) -> list[dict]:
        """One dict of metrics per sample (same order). Missing metrics are None, never 0.

        KL, preference and utility need the steering (plans + vectors); without them they are None.
        surprisal_drift and coherency_proxy need baseline samples; without them they are None.
        """
        s = self.settings
        steered = plans is not None and vectors is not None
        if plans is not None:
            bad = [x.candidate for x in samples if not 0 <= x.candidate < len(plans)]
            if bad:
                raise SteeroptError(f"sample candidate index {bad[0]} has no plan (got {len(plans)} plans)")
        out = [
            M.cheap_metrics(x.token_ids, x.text, x.finished, self.stop, self.patterns,
                            loop_max_period=s.loop_max_period, loop_min_span=s.loop_min_span)
            for x in samples
        ]
        if not self.teacher_forced:  # the objective reads none of them: token and text metrics only
            for m in out:
                m.update({k: None for k in FORCED_METRICS}, drift_ref=None, preference=None, preference_base=None,
                         utility=None)
            return out
        rows = [Row(self.scoring_ids(x), list(x.token_ids), plan=x.candidate) for x in samples]
        scored = surprisal_and_kl(self.lm, rows, batch_size=s.batch_size, kl_positions=s.kl_positions,
                                  plans=plans if steered else None, vectors=vectors)
        ref = self.baseline_reference(baseline) if baseline else None
        for x, m, (sur, kl) in zip(samples, out, scored):
            m["surprisal"], m["kl"] = sur, kl
            base, where = None, None
            if ref is not None:
                for where, base in (("prompt", ref["prompt"].get((x.family, x.prompt))),
                                    ("family", ref["family"].get(x.family)), ("all", ref["all"])):
                    if base is not None:
                        break
            drift = None if sur is None or base is None else sur - base
            m["surprisal_drift"] = drift
            m["drift_ref"] = where if drift is not None else None
            m["coherency_proxy"] = None if drift is None else math.exp(-max(0.0, drift) / s.proxy_tau)
            m.update(preference=None, preference_base=None, utility=None)
        # quality metrics from the same unsteered surprisals (quality.py)
        base_sur = [self._base_surprisal[(tuple(b.prompt_ids), tuple(b.token_ids))] for b in baseline] if baseline else None
        for m, q in zip(out, self.quality.compute(samples, [m["surprisal"] for m in out], [m["rep_3"] for m in out],
                                                  baseline, base_sur)):
            m.update(q)
        c = self.concept
        if steered and self.preference and c.positive_completions and c.negative_completions:
            ids = [tuple(self.scoring_ids(x)) for x in samples]
            prompts = sorted(set(ids))
            pidx = {p: i for i, p in enumerate(prompts)}
            pu = preference_utility(self.lm, [list(p) for p in prompts], c.positive_completions, c.negative_completions,
                                    plans, vectors, batch_size=s.batch_size, cache=self._completion_cache)
            for x, i, m in zip(samples, ids, out):
                m.update(pu[(x.candidate, pidx[i])])
        return out
