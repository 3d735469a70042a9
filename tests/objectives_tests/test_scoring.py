"""Teacher-forced scoring on the real embedded model, against the real generator and steering hooks."""
from __future__ import annotations

import pytest

from steeropt.engine.generation import Decoding, Generator
from steeropt.evaluation.objectives import ConceptInfo, Tier1
from steeropt.engine.teacher_forced import Row, preference_utility, surprisal_and_kl, token_logprobs
from steeropt.types import InterventionPlan, Site

PROMPTS = [("open", "Tell me about your weekend."), ("advice", "Give me some advice for a job interview.")]


def plan(alpha: float, positions: str = "all") -> InterventionPlan:
    return InterventionPlan([Site(4, "add", "wedding", positions=positions)], [alpha])


@pytest.fixture(scope="module")
def generated(embedded, wedding_vectors):
    plans = [plan(0.0), plan(0.3), plan(0.3, "generated")]
    samples = Generator(embedded, wedding_vectors).run(PROMPTS, plans, Decoding(max_new_tokens=16), seed=0)
    return plans, samples


def test_teacher_forced_matches_generation_logprobs(embedded, wedding_vectors, generated):
    """Steered teacher-forced log-probs equal the generator's own (left padding and positions handled)."""
    plans, samples = generated
    rows = [Row(s.prompt_ids, s.token_ids, plan=s.candidate) for s in samples]
    tf = token_logprobs(embedded, rows, batch_size=4, plans=plans, vectors=wedding_vectors)
    for s, lp in zip(samples, tf):
        assert len(lp) == len(s.logprobs)
        assert max(abs(a - b) for a, b in zip(lp, s.logprobs)) < 2e-3


def test_unsteered_against_itself_is_zero(embedded, wedding_vectors, generated):
    plans, samples = generated
    base = [s for s in samples if s.candidate == 0]
    rows = [Row(s.prompt_ids, s.token_ids, plan=0) for s in base]
    res = surprisal_and_kl(embedded, rows, batch_size=4, kl_positions=8, plans=plans, vectors=wedding_vectors)
    for s, (sur, kl) in zip(base, res):
        assert sur == pytest.approx(-sum(s.logprobs) / len(s.logprobs), abs=1e-3)  # alpha = 0 output
        assert kl == pytest.approx(0.0, abs=1e-5)
    steered = [Row(s.prompt_ids, s.token_ids, plan=1) for s in base]
    assert all(kl > 0.05 for _, kl in surprisal_and_kl(embedded, steered, kl_positions=8, plans=plans, vectors=wedding_vectors))
    # drift of the baseline against itself is 0; steered outputs drift upwards
    t1 = Tier1(embedded, ConceptInfo("wedding", keywords=["wedd*"]))
    m = t1.compute(samples, plans, baseline=base, vectors=wedding_vectors)
    # The baseline's surprisal is computed in its own batch (2 rows, no hooks), the samples' in a 6-row batch:
    # float32 kernels differ in the last bits with batch shape (~1e-6 relative on per-token log-probs of
    # magnitude <= 10), so 1e-4; a steered drift is > 0.05. KL of two near-identical float32 distributions: 1e-5.
    assert all(abs(x["surprisal_drift"]) < 1e-4 for x, s in zip(m, samples) if s.candidate == 0)
    assert all(x["kl"] < 1e-5 for x, s in zip(m, samples) if s.candidate == 0)


def test_preference_and_utility(embedded, wedding_vectors, wedding_concept):
    prompt_ids = [embedded.tokenizer(embedded.render(p), add_special_tokens=False)["input_ids"] for _, p in PROMPTS]
    plans = [plan(0.0), plan(0.1), plan(0.2)]
    pu = preference_utility(embedded, prompt_ids, wedding_concept.positive_completions,
                            wedding_concept.negative_completions, plans, wedding_vectors)
    for pi in range(len(PROMPTS)):
        zero, mid, high = (pu[(p, pi)] for p in range(3))
        assert zero["utility"] == pytest.approx(0.0, abs=1e-4)
        assert zero["preference"] == pytest.approx(zero["preference_base"], abs=1e-4)
        assert zero["preference"] < mid["preference"] < high["preference"]  # smooth and monotone in alpha
