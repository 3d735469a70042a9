"""Issue 11 §2: the neutral-context fluency proxy and the PMI relevance proxy on the real embedded model."""
from __future__ import annotations

from steeropt.evaluation.objectives import ConceptInfo, Tier1
from steeropt.evaluation.validation import LabelItem, baseline_for, item_samples
from tests.validation_tests.conftest import ANSWERS, SALAD, WEDDING

# Logprobs differ by ~1e-5 nats with batch shape / threads; every margin below is >= 0.2 nats, and the
# measured gaps are 4.3 (fluency) and 0.37-1.35 (relevance) nats/token.


def _metrics(lm, items):
    t1 = Tier1(lm, ConceptInfo("wedding"))
    return t1.compute(item_samples(lm, items), baseline=baseline_for(lm, items))


def test_fluent_on_concept_answer_is_not_broken(embedded):
    # The wedding answer ignores the dinner prompt: given the PROMPT it looks unlikely; given the neutral
    # instruction it must look far more fluent than word salad made of the same words.
    prompt = "What should I cook for dinner tonight?"
    fluent, salad = _metrics(embedded, [LabelItem(prompt, WEDDING, "wedding", {}), LabelItem(prompt, SALAD, "wedding", {})])
    assert salad["neutral_surprisal"] - fluent["neutral_surprisal"] > 2.0
    assert fluent["fluency_proxy"] > 5 * salad["fluency_proxy"]
    assert 0.0 <= salad["fluency_proxy"] <= fluent["fluency_proxy"] <= 1.0
    # The neutral context removes the prompt: it scores the fluent answer better than the prompt does.
    assert fluent["neutral_surprisal"] < fluent["surprisal"]


def test_relevance_pmi_prefers_the_answer_to_the_prompt(embedded):
    items = []
    for i, (prompt, answer) in enumerate(ANSWERS):
        other = ANSWERS[(i + 1) % len(ANSWERS)][0]
        items += [LabelItem(prompt, answer, "x", {}), LabelItem(other, answer, "x", {})]
    rows = _metrics(embedded, items)
    for k in range(0, len(rows), 2):
        matched, mismatched = rows[k], rows[k + 1]
        # same tokens, same neutral surprisal: only the prompt differs
        assert abs(matched["neutral_surprisal"] - mismatched["neutral_surprisal"]) < 1e-3
        assert matched["relevance_pmi"] > mismatched["relevance_pmi"] + 0.2, items[k].prompt
        assert matched["relevance_proxy"] >= mismatched["relevance_proxy"]
