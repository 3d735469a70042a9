"""A strength sweep for one concept: the quickest look at where steering starts and where it breaks.

Per α, over the same prompts: the keyword rate (share of samples with a concept keyword), token 3-gram
repetition, distinct-1, fluency_proxy (evaluation.objectives.quality: surprisal after a neutral instruction
relative to the unsteered answers, times 1 - rep-3) and the share of *broken* samples: empty, or over one of
BROKEN_IF's thresholds. `propose` reads sweeps at several layers and proposes a layer and an α range for a study.

    >>> s = sweep(lm, load_concept("wedding"), [0.0, 0.2, 0.4], layer=10, n_prompts=4)   # doctest: +SKIP
    >>> [(r.alpha, r.keyword_rate, r.broken_share) for r in s.rows]                      # doctest: +SKIP
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field

from steeropt.engine.generation import Decoding, Generator
from steeropt.engine.interventions import raw_alphas
from steeropt.engine.models import LoadedModel
from steeropt.engine.vectors import VectorSet, diff_in_means
from steeropt.evaluation.objectives.config import Gate
from steeropt.evaluation.objectives.gates import gate_reasons
from steeropt.evaluation.objectives.metrics import cheap_metrics, compile_keywords
from steeropt.evaluation.objectives.quality import neutral_surprisals, quality_metrics
from steeropt.specs.concepts import Concept
from steeropt.types import InterventionPlan, Site

# A sweep's rough "broken" flag, to find where an α range should end; not a score gate. These thresholds were
# the quickstart objective's gates, dropped there because no cheap threshold keeps precision >= 0.9 on every
# held-out concept (bench/judge_quality/gates.md); a study's scores come from its objective, never from here.
BROKEN_IF = (Gate(metric="distinct_1", op="<", value=0.43, reason="collapsed"),
             Gate(metric="fluency_proxy", op="<", value=0.29, reason="broken"))
RISE = 0.25  # keyword rate above the unsteered rate that counts as "the concept shows"
MAX_BROKEN = 0.25  # an α is fine while at most this share of its samples is broken


@dataclass
class SweepSample:
    prompt: str
    text: str
    keyword_hits: int
    rep_3: float | None  # None: fewer than 3 tokens
    distinct_1: float | None
    fluency_proxy: float | None
    broken: str | None  # None, "empty", or the reason of the first gate that caught it

    @property
    def empty(self) -> bool:
        return not self.text.strip()


def _mean(xs) -> float:
    xs = [x for x in xs if x is not None]
    return sum(xs) / len(xs) if xs else float("nan")


@dataclass
class SweepRow:
    alpha: float
    raw_alpha: float
    samples: list[SweepSample]
    layer: int = 0

    @property
    def keyword_rate(self) -> float:
        return sum(s.keyword_hits > 0 for s in self.samples) / len(self.samples)

    @property
    def rep_3(self) -> float:
        return _mean(s.rep_3 for s in self.samples)

    @property
    def distinct_1(self) -> float:
        return _mean(s.distinct_1 for s in self.samples)

    @property
    def fluency_proxy(self) -> float:
        return _mean(s.fluency_proxy for s in self.samples)

    @property
    def broken_share(self) -> float:
        return sum(s.broken is not None for s in self.samples) / len(self.samples)

    @property
    def empty(self) -> int:
        return sum(s.empty for s in self.samples)

    @property
    def sample(self) -> str:
        return self.samples[0].text


@dataclass
class Sweep:
    """One layer's sweep: the unsteered baseline and one row per α, on `prompts`."""

    layer: int
    controller: str
    prompts: list[str]
    baseline: SweepRow  # unsteered (no site active), alpha = nan
    rows: list[SweepRow] = field(default_factory=list)


def sweep_units(n_alphas: int, n_prompts: int, max_new_tokens: int) -> int:
    """Progress units of one `sweep` call: 1 for the vector, rows x decode steps of the unsteered and the steered
    generate call, 1 for scoring."""
    return 2 + (n_alphas + 1) * n_prompts * max_new_tokens


@contextmanager
def _decode_steps(lm: LoadedModel, tick):
    """Call tick() on every forward pass of the model (one per decode step of a generate call)."""
    handle = lm.model.register_forward_hook(lambda *_: tick())
    try:
        yield
    finally:
        handle.remove()


def sweep(lm: LoadedModel, concept: Concept, alphas: list[float], *, layer: int | None = None,
          controller: str = "add", n_prompts: int = 8, decoding: Decoding = Decoding(max_new_tokens=40),
          seed: int = 0, progress=None) -> Sweep:
    """Generate every (α, prompt) pair in one batched call, plus the unsteered answers, and score them.

    progress(k) is called with k units done (sweep_units in all): the bar moves with every decode step."""
    tick = progress or (lambda k: None)
    layer = (concept.layer if concept.layer is not None else 10) if layer is None else layer
    vectors = VectorSet()
    vectors.add(diff_in_means(lm, concept.positive, concept.negative, layer, name=concept.name))
    tick(1)
    prompts = [(concept.name, p) for p in concept.prompts[:n_prompts]]
    plans = [InterventionPlan([Site(layer, controller, concept.name)], [a]) for a in alphas]
    gen = Generator(lm, vectors)
    samples = []
    for batch in ([InterventionPlan([], [])], plans):
        rows, steps = len(batch) * len(prompts), [0]

        def step():  # one decode step of every row; at most max_new_tokens per call, however it is split
            if steps[0] < decoding.max_new_tokens:
                steps[0] += 1
                tick(rows)

        with _decode_steps(lm, step):
            samples.append(gen.run(prompts, batch, decoding, seed=seed))
        tick(rows * (decoding.max_new_tokens - steps[0]))  # a call that stopped early (every row ended)
    base, steered = samples
    neutral = neutral_surprisals(lm, base + steered)
    ref = {"neutral": _mean(neutral[:len(base)])}
    patterns = compile_keywords(concept.keywords)
    stop = {lm.tokenizer.eos_token_id, lm.tokenizer.pad_token_id}

    def scored(s, n):
        m = cheap_metrics(s.token_ids, s.text, s.finished, stop, patterns)
        m["fluency_proxy"] = quality_metrics(n, None, m["rep_3"], ref)["fluency_proxy"]
        broken = "empty" if not s.text.strip() else next(iter(gate_reasons(m, BROKEN_IF)), None)
        return SweepSample(s.prompt, s.text, int(m["keyword_hits"] or 0), m["rep_3"], m["distinct_1"],
                           m["fluency_proxy"], broken)

    out = [scored(s, n) for s, n in zip(base + steered, neutral)]
    tick(1)
    k = len(prompts)
    result = Sweep(layer, controller, [p for _, p in prompts], SweepRow(float("nan"), 0.0, out[:k], layer))
    for i, alpha in enumerate(alphas):
        result.rows.append(SweepRow(alpha, raw_alphas(plans[i], vectors, lm)[0], out[k * (i + 1):k * (i + 2)], layer))
    return result


# ---- from sweeps to a proposed study range -------------------------------------------------------

@dataclass
class Proposal:
    layer: int
    low: float
    high: float
    reasons: list[str]  # one line per layer looked at, then why this one
    onset: float | None = None  # lowest α where the keyword rate rose
    last_fine: float | None = None  # highest α before the first broken one


def _window(s: Sweep) -> tuple[float | None, float | None, float | None]:
    """(onset, last fine α, first broken α) of one layer's sweep (rows in increasing α)."""
    base = s.baseline.keyword_rate
    first_broken = next((r.alpha for r in s.rows if r.broken_share > MAX_BROKEN), None)
    fine = [r for r in s.rows if first_broken is None or r.alpha < first_broken]
    onset = next((r.alpha for r in fine if r.keyword_rate >= base + RISE), None)
    return onset, (fine[-1].alpha if fine else None), first_broken


def describe(s: Sweep) -> str:
    """One line: where the concept shows and where the text breaks at this layer."""
    onset, last_fine, first_broken = _window(s)
    rise = (f"keyword rate {s.baseline.keyword_rate:.2f} unsteered, ≥ +{RISE:g} from α={onset:g} "
            f"({next(r.keyword_rate for r in s.rows if r.alpha == onset):.2f})" if onset is not None else
            f"keyword rate {s.baseline.keyword_rate:.2f} unsteered, never +{RISE:g} before the text breaks")
    if first_broken is None:
        breaks = f"text fine up to α={s.rows[-1].alpha:g} (the largest tried)"
    else:
        r = next(r for r in s.rows if r.alpha == first_broken)
        breaks = (f"text breaks at α={first_broken:g} ({sum(x.broken is not None for x in r.samples)}/{len(r.samples)} "
                  f"samples empty or gated; rep-3 {r.rep_3:.2f}, distinct-1 {r.distinct_1:.2f}, "
                  f"fluency_proxy {r.fluency_proxy:.2f})")
    return f"layer {s.layer}: {rise}; {breaks}"


def propose(sweeps: list[Sweep]) -> Proposal:
    """The layer with the widest fine window above the onset, and an α range from just below the onset to the
    first broken α (so a study sees both where the concept starts and where the text breaks)."""
    reasons = [describe(s) for s in sweeps]
    scored = []
    for s in sweeps:
        onset, last_fine, first_broken = _window(s)
        alphas = [r.alpha for r in s.rows]
        width = 0 if onset is None or last_fine is None else sum(onset <= a <= last_fine for a in alphas)
        best_rate = max([r.keyword_rate for r in s.rows if first_broken is None or r.alpha < first_broken] or [0])
        scored.append((width, best_rate, -s.layer, s, onset, last_fine, first_broken))
    width, _, _, s, onset, last_fine, first_broken = max(scored, key=lambda t: t[:3])
    alphas = [r.alpha for r in s.rows]
    step = (alphas[-1] - alphas[0]) / max(len(alphas) - 1, 1)
    if onset is None:
        low = 0.0
        reasons.append(f"→ layer {s.layer}: no layer raised the keyword rate before its text broke; check the "
                       "keywords (are they words the model writes?) and the contrast sentences, or try other layers; "
                       "α range from 0 to the first broken α")
    else:
        low = max(0.0, max([a for a in alphas if a < onset], default=onset))
    high = first_broken if first_broken is not None else alphas[-1] + step
    high = max(high, low + step)  # broken from the first α on: still a range to search
    low, high = round(low, 2), round(high, 2)
    if onset is not None:
        upto = "the first broken α" if first_broken is not None else "one step past the largest α (none broke)"
        reasons.append(f"→ layer {s.layer} (widest window: {width} α values with the concept and fine text); "
                       f"α range [{low:g}, {high:g}]: from just below the onset to {upto}")
    return Proposal(s.layer, low, high, reasons, onset, last_fine)
