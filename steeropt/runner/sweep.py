"""A 1-D strength sweep for one concept: the quickest look at where steering starts and where it breaks."""
from __future__ import annotations

from dataclasses import dataclass

from steeropt.specs.concepts import Concept
from steeropt.engine.generation import Decoding, Generator
from steeropt.engine.interventions import raw_alphas
from steeropt.engine.models import LoadedModel
from steeropt.evaluation.objectives.metrics import cheap_metrics, compile_keywords
from steeropt.types import InterventionPlan, Site
from steeropt.engine.vectors import VectorSet, diff_in_means


@dataclass
class SweepRow:
    alpha: float
    raw_alpha: float
    keyword_rate: float  # share of samples with at least one concept keyword
    rep_3: float  # mean token 3-gram repetition (1 - unique/total)
    sample: str  # the first prompt's completion


def sweep(lm: LoadedModel, concept: Concept, alphas: list[float], *, layer: int | None = None,
          controller: str = "add", n_prompts: int = 8, decoding: Decoding = Decoding(max_new_tokens=40),
          seed: int = 0, progress=None) -> list[SweepRow]:
    """Generate every (α, prompt) pair in batched calls and summarise each α."""
    layer = concept.layer if layer is None else layer
    vectors = VectorSet()
    vectors.add(diff_in_means(lm, concept.positive, concept.negative, layer, name=concept.name))
    prompts = [(concept.name, p) for p in concept.prompts[:n_prompts]]
    plans = [InterventionPlan([Site(layer, controller, concept.name)], [a]) for a in alphas]
    samples = Generator(lm, vectors).run(prompts, plans, decoding, seed=seed, progress=progress)
    patterns = compile_keywords(concept.keywords)
    stop = {lm.tokenizer.eos_token_id, lm.tokenizer.pad_token_id}
    rows = []
    for k, alpha in enumerate(alphas):
        group = samples[k * len(prompts):(k + 1) * len(prompts)]
        metrics = [cheap_metrics(s.token_ids, s.text, s.finished, stop, patterns) for s in group]
        reps = [m["rep_3"] for m in metrics if m["rep_3"] is not None]
        rows.append(SweepRow(alpha, raw_alphas(plans[k], vectors, lm)[0],
                             sum(m["keyword_hit"] or 0 for m in metrics) / len(group),
                             sum(reps) / len(reps) if reps else float("nan"), group[0].text))
    return rows
