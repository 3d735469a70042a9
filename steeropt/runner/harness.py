"""The parts a study spec needs to score steering settings, built in one place: model, vectors, generator,
decoding, judge and objective stack, with `score` for settings beside the unsteered and prompted arms.

    >>> h = Harness(build("study", "studies/quickstart.yaml")).load()            # doctest: +SKIP
    >>> scored = h.score(h.prompts, [h.space.materialize({"alpha": 0.8})], h.arms(), seed=h.spec.seed)
    >>> scored.results[0].values["concept"], scored.arms["unsteered"].values["concept"]

The study loop (runner.study), the re-evaluation (runner.reeval), pick's held-out run (deploy.pick), the power
pilot (runner.power), parity (deploy.parity) and the benchmarks build their parts here. `Harness(spec)` only reads
the spec's parts; `load()` loads the model and builds the rest, in an order that fails on a bad vector or judge
before anything is written.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from steeropt.engine.generation import Decoding, Generator
from steeropt.engine.models import EMBEDDED_NAME, load_model
from steeropt.engine.models.loading import SPLIT_MODELS, model_sha256
from steeropt.engine.vectors import VectorSet, caa, diff_in_means, from_file, from_sae
from steeropt.evaluation.judges import make_judge
from steeropt.evaluation.objectives import ObjectiveStack
from steeropt.evaluation.objectives.stack import TrialResult
from steeropt.evaluation.objectives.tier1 import ConceptInfo
from steeropt.search.dose_units import calibrate
from steeropt.specs import StudySpec
from steeropt.specs.prompts import read_pairs, read_texts, trial_prompts
from steeropt.types import InterventionPlan, Sample


@dataclass
class Scored:
    """What `Harness.score` returns: one result per plan given, one per arm, and every sample generated."""

    results: list[TrialResult]
    arms: dict[str, TrialResult] = field(default_factory=dict)
    samples: list[Sample] = field(default_factory=list)


class Harness:
    """Owns the parts that score a spec's settings (module docstring)."""

    def __init__(self, spec: StudySpec):
        self.spec = spec
        self.space = spec.part("search_space")
        self.objective = spec.part("objective")
        self.judge_spec = spec.part("judge") if self.objective.judge else None
        self.prompts = trial_prompts(spec)  # the selection prompts every trial is scored on
        self.loaded = False

    def load(self, lm=None, *, vectors: VectorSet | None = None, decoding: Decoding | None = None,
             judge_cache=True, calibrate_doses: bool = True) -> "Harness":
        """Load the model (or use `lm`) and build vectors (or use `vectors`), dose maps, judge, stack and generator.
        judge_cache: as make_judge's `cache` (None: no cache). calibrate_doses: map KL-unit strengths to α."""
        if self.loaded:
            return self
        spec = self.spec
        self.lm = lm or load_model(spec.model)
        self.vectors = vectors if vectors is not None else build_vectors(self.lm, spec)
        self.dose_maps = {}
        if calibrate_doses and self.space.kl_unit_params():  # strengths in nats of KL: the α ↔ KL map first
            self.dose_maps = calibrate(self.lm, self.vectors, self.space)
        self.judge = make_study_judge(self.judge_spec, self.lm, cache=judge_cache)
        self.stack = ObjectiveStack(self.objective, self.lm, self.judge, ConceptInfo.from_concept(spec.concept))
        self.generator = Generator(self.lm, self.vectors)
        self.decoding = decoding or Decoding(**spec.decoding.model_dump())
        self.loaded = True
        return self

    @property
    def value_names(self) -> list[str]:
        """The objectives' and constraints' names, in the stack's order."""
        return [n for n, _ in self.stack.objectives] + [n for n, _, _ in self.stack.constraints]

    def arms(self) -> dict[str, InterventionPlan]:
        """name -> plan: "unsteered", and "prompted" when the study has one (runner.arms)."""
        return arm_plans(self.spec)

    def generate(self, prompts, plans, *, seed: int | None = None, decoding: Decoding | None = None) -> list[Sample]:
        """Every plan × prompt in one batched generate call (plan-major)."""
        seed = self.spec.seed if seed is None else seed
        return self.generator.run(prompts, plans, decoding or self.decoding, seed=seed)

    def evaluate(self, samples, plans, baseline) -> list[TrialResult]:
        """The objective stack on samples of `plans`, with `baseline` the unsteered samples of the same prompts."""
        return self.stack.evaluate(samples, plans, baseline=baseline, vectors=self.vectors)

    def score(self, prompts, plans, arms: dict[str, InterventionPlan], *, seed: int, repeats: int = 1) -> Scored:
        """`plans` and then the named `arms` (one must be "unsteered": the baseline the stack scores against) on
        `prompts`, in one generate call per repeat (seeds seed, seed + 1, ...), scored together."""
        every = [*plans, *arms.values()]
        samples = []
        for r in range(repeats):
            samples += self.generate(prompts, every, seed=seed + r)
        unsteered = len(plans) + list(arms).index("unsteered")
        res = self.evaluate(samples, every, [s for s in samples if s.candidate == unsteered])
        return Scored(res[: len(plans)], dict(zip(arms, res[len(plans):])), samples)

    def close(self) -> None:
        if self.loaded and self.judge is not None:
            self.judge.close()


def instruction(spec) -> str | None:
    """The prompted arm's instruction for this study's concept, or None when the study has no prompted arm."""
    if spec.prompted is None:
        return None
    c = spec.concept
    return spec.prompted.instruction.format(description=c.description or c.name, name=c.name)


def arm_plans(spec) -> dict[str, InterventionPlan]:
    """name -> plan: "unsteered", and "prompted" (no sites, the concept asked for after the prompt) when the study
    has one."""
    plans = {"unsteered": InterventionPlan([], [])}
    text = instruction(spec)
    if text:
        plans["prompted"] = InterventionPlan([], [], instruction=text)
    return plans


def judge_lm(ref: str, study_lm):
    """The model a local judge whose spec names `ref` runs on: the study's own model when `ref` names the same
    weights (same sha256), else `ref` loaded. A judge is never silently replaced by the steered model."""
    named = ref == study_lm.name and (ref == EMBEDDED_NAME or ref in SPLIT_MODELS)  # the name fixes the weights
    if named or model_sha256(ref) == study_lm.sha256:
        return study_lm
    return load_model(ref)


def make_study_judge(judge_spec, study_lm, *, cache=True):
    """The study's judge (None without one); a local judge reuses the study's model only when it is the same."""
    if judge_spec is None:
        return None
    lm = judge_lm(judge_spec.model, study_lm) if judge_spec.backend == "local" else None
    return make_judge(judge_spec, lm=lm, cache=cache)


def build_vectors(lm, spec: StudySpec) -> VectorSet:
    """The spec's steering vectors, computed (diff_in_means, caa) or read (sae, file) on `lm`."""
    def texts(v):
        return list(v) if isinstance(v, list) else read_texts(v)

    vs = VectorSet()
    for src in spec.vectors:
        if src.method == "diff_in_means":
            vec = diff_in_means(lm, texts(src.positive), texts(src.negative), src.layer, name=src.name, site=src.site)
        elif src.method == "caa":
            pairs = src.pairs if isinstance(src.pairs, list) else read_pairs(src.pairs)
            vec = caa(lm, [(_pair(p, True), _pair(p, False)) for p in pairs], src.layer, name=src.name)
        elif src.method == "sae":
            vec = from_sae(lm, src.path, src.feature, src.layer, name=src.name)
        else:
            vec = from_file(lm, src.path, src.layer, name=src.name, site=src.site)
        vs.add(vec)
    return vs


def _pair(p, positive: bool) -> str:
    get = (lambda k: getattr(p, k)) if not isinstance(p, dict) else p.get
    prompt = get("prompt") or ""
    return (prompt + " " + (get("positive") if positive else get("negative"))).strip()
