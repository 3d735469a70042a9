"""What a study records about itself in MLflow: the parameters that reproduce it (spec, model hash, package
versions), its tags, the resolved spec, and the judge card (which scorer, and how far to trust it)."""
from __future__ import annotations

import hashlib
import platform
from importlib.metadata import PackageNotFoundError, version

import yaml

from steeropt.evaluation import calibration
from steeropt.redact import redact, scrub


def package_versions() -> dict:
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
    return yaml.safe_dump(scrub({"study": study.spec.model_dump(mode="json"),
                                 "search_space": study.space.model_dump(mode="json"),
                                 "objective": study.objective.model_dump(mode="json"),
                                 "judge": study.judge_spec.model_dump(mode="json") if study.judge_spec else None}),
                          sort_keys=False)
