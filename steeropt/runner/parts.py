"""Building the parts of a study from its spec: vectors, prompts, the judge's model, storage check, and what
the study records about itself (params, tags, resolved spec) in MLflow."""
from __future__ import annotations

import hashlib

import platform

from steeropt.engine.vectors import VectorSet
from steeropt.redact import redact, scrub
from steeropt.runner.checks import check_storage  # noqa: F401  (re-exported)
from steeropt.specs import StudySpec
from steeropt.types import InterventionPlan


def judge_lm(ref: str, study_lm):
    """The model a local judge whose spec names `ref` runs on: the study's own model when `ref` names the same
    weights (same sha256), else `ref` loaded. A judge is never silently replaced by the steered model."""
    from steeropt.engine.models import EMBEDDED_NAME, load_model
    from steeropt.engine.models.loading import SPLIT_MODELS

    named = ref == study_lm.name and (ref == EMBEDDED_NAME or ref in SPLIT_MODELS)  # the name fixes the weights
    if named or model_sha256(ref) == study_lm.sha256:
        return study_lm
    return load_model(ref)


def model_sha256(ref: str) -> str:
    """The sha256 load_model would give `ref` (LoadedModel.sha256), without loading the weights."""
    from steeropt.engine.models.loading import SPLIT_MODELS, _weights_hash, resolve_source

    return SPLIT_MODELS[ref][2] if ref in SPLIT_MODELS else _weights_hash(*resolve_source(ref))


def make_study_judge(judge_spec, study_lm):
    """The study's judge (None without one); a local judge reuses the study's model only when it is the same."""
    if judge_spec is None:
        return None
    from steeropt.evaluation.judges import make_judge

    lm = judge_lm(judge_spec.model, study_lm) if judge_spec.backend == "local" else None
    return make_judge(judge_spec, lm=lm)


def trial_prompts(spec: StudySpec) -> list[tuple[str, str]]:
    """The selection prompts every trial is scored on: round-robin over families, fixed for the study.

    Which selection prompts are used is drawn with the study's `seed` (the split itself uses prompts.split_seed),
    so two seeds are two replicates on different prompts and the same held-out set; the selection prompts no
    trial uses are the fresh ones re-evaluation draws from (`fresh_prompts`)."""
    return _selection_order(spec)[0]


def fresh_prompts(spec: StudySpec) -> dict[str, list[str]]:
    """family -> the selection prompts no trial is scored on, in the seeded order re-evaluation takes them."""
    return _selection_order(spec)[1]


def _selection_order(spec: StudySpec):
    import random

    splits = spec.splits()
    rng = random.Random(spec.seed)
    pools = {name: rng.sample(list(s.selection), len(s.selection)) for name, s in splits.items()}
    out: list[tuple[str, str]] = []
    while len(out) < spec.budget.prompts_per_trial and any(pools.values()):
        for name, pool in pools.items():
            if pool and len(out) < spec.budget.prompts_per_trial:
                out.append((name, pool.pop(0)))
    return out, pools


def build_vectors(lm, spec: StudySpec) -> VectorSet:
    from steeropt.engine.vectors import caa, diff_in_means, from_file, from_sae
    from steeropt.specs.prompts import read_pairs, read_texts

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


def site_names(plan: InterventionPlan) -> list[str]:
    return [f"L{s.layer}.{s.controller}.{s.vector}" + (f".h{'-'.join(map(str, s.heads))}" if s.heads else "")
            for s in plan.sites]


def package_versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for pkg in ("steeropt", "torch", "transformers", "optuna", "ax-platform", "botorch", "mlflow", "openai"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "-"
    return out


def run_params(study) -> dict:
    """The parent MLflow run's params: what reproduces the study (spec, model hash, versions)."""
    s = study.spec
    return scrub({"model": s.model, "model_sha256": study.lm.sha256, "seed": s.seed, "optimizer": s.optimizer.name,
            "search_space": study.space.name, "objective": study.objective.name,
            "judge": study.judge.identity if study.judge else "none", "trials": s.budget.trials,
            "batch_size": s.budget.batch_size, "prompts_per_trial": s.budget.prompts_per_trial,
            "storage": redact(s.storage), **{f"decoding.{k}": v for k, v in s.decoding.model_dump().items()},
            **{f"version.{k}": v for k, v in package_versions().items()}})


def run_tags(study) -> dict:
    return scrub({"steeropt.model_sha256": study.lm.sha256, "steeropt.spec": study.spec.source,
                  "steeropt.concept": study.spec.concept.name})


def judge_card(study) -> dict:
    """What scored the study and how far to trust it: per score its source (judge rubric with its hash, cheap
    metric, or calibration file with the held-out agreement recorded in it), the judge model and its sha256."""
    import yaml

    from steeropt.evaluation import calibration

    judge = study.judge
    card = {"objective": study.objective.name, "judge": judge.identity if judge else None, "scores": {}}
    for name, src in study.objective.scores.items():
        if src.rubric is not None:
            rubric = study.judge_spec.rubrics[src.rubric]
            card["scores"][name] = {"rubric": src.rubric, "rubric_sha": rubric.digest()}
        elif src.calibrated is not None:
            path = calibration.find(src.calibrated)
            data = yaml.safe_load(path.read_text()) or {}
            ev = data.get("evaluation") or {}
            card["scores"][name] = {"calibrated": str(src.calibrated), "axis": src.axis,
                                    "sha256": hashlib.sha256(path.read_bytes()).hexdigest()[:16],
                                    "fitted_on": data.get("labels"), "agreement_method": ev.get("method"),
                                    "agreement_on": ev.get("test"), "agreement": ev.get(src.axis)}
        else:
            card["scores"][name] = {"metric": src.metric}
    return scrub(card)


def resolved_yaml(study) -> str:
    import yaml

    return yaml.safe_dump(scrub({"study": study.spec.model_dump(mode="json"),
                                 "search_space": study.space.model_dump(mode="json"),
                                 "objective": study.objective.model_dump(mode="json"),
                                 "judge": study.judge_spec.model_dump(mode="json") if study.judge_spec else None}),
                          sort_keys=False)
