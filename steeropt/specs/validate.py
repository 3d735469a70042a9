"""`steeropt validate`: check a whole study without loading model weights.

Order: the study schema -> data files (vectors, prompt families) -> the model's shape
(`steeropt.engine.models.describe`, config.json / GGUF metadata only) -> layers and heads -> nested specs
(search space, objective, judge) resolve and validate -> cross checks. The first problem raises
SpecError naming the file and the field.

A nested spec class may define `check_against(study: StudySpec, model: ModelInfo | None) -> None`
(raising SpecError) for checks that need the study, e.g. search-space layers, heads and vector names.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from steeropt.errors import ModelError, SpecError, SteeroptError
from steeropt.specs.prompts import read_pairs, read_texts
from steeropt.specs.factory import build, load_spec
from steeropt.specs.study import StudySpec


@dataclass
class ResolvedPart:
    """One checked piece of a study, for `steeropt validate` to print."""

    kind: str  # study | model | vector | prompt_family | search_space | objective | judge
    name: str
    source: str  # file it came from ("<inline>" or the embedded model name)
    value: Any  # the typed spec, ModelInfo, PromptSplit or a summary dict
    note: str = ""  # e.g. why a check was skipped


def validate_study(ref: str | Path | dict, *, search_paths: list[Path] | None = None) -> list[ResolvedPart]:
    """Check everything a run needs except the weights; returns the resolved parts in flow order."""
    study: StudySpec = build("study", ref, search_paths=search_paths)
    src = study.source
    parts = [ResolvedPart("study", study.name, src, study)]
    parts += _check_vectors(study)
    splits = study.splits()
    for name, split in splits.items():
        parts.append(ResolvedPart("prompt_family", name, src, split,
                                  f"{len(split.selection)} selection / {len(split.held_out)} held out"))
    n_sel = sum(len(s.selection) for s in splits.values())
    if study.budget.prompts_per_trial > n_sel:
        raise SpecError(src, "budget.prompts_per_trial",
                        f"{study.budget.prompts_per_trial} is more than the {n_sel} selection prompts of all families")
    info, note = _describe(study)
    parts.append(ResolvedPart("model", getattr(info, "name", study.model), study.model, info, note))
    if info is not None:
        _check_shapes(study, info)
    nested = _nested(study)
    for part in nested:
        if part.kind == "search_space":
            _check_space(study, info, part)
        check = getattr(part.value, "check_against", None)
        if callable(check):
            check(study, info)
    _check_rubrics(study, nested)
    return parts + nested


def _check_vectors(study: StudySpec) -> list[ResolvedPart]:
    out = []
    for i, v in enumerate(study.vectors):
        counts = {}
        for f in ("positive", "negative", "pairs", "path"):
            value = getattr(v, f)
            if isinstance(value, str):
                field = f"vectors.{i}.{f}"
                if not Path(value).is_file():
                    raise SpecError(study.source, field, f"data file not found: {value}")
                if f == "path":
                    continue
                try:
                    items = read_pairs(value) if f == "pairs" else read_texts(value)
                except SpecError as e:
                    raise SpecError(study.source, field, str(e)) from None
                if not items:
                    raise SpecError(study.source, field, f"data file has no texts: {value}")
                counts[f] = len(items)
            elif isinstance(value, list):
                counts[f] = len(value)
        out.append(ResolvedPart("vector", v.name, study.source, counts, f"{v.method} at layer {v.layer} ({v.site})"))
    return out


def _describe(study: StudySpec):
    """(ModelInfo, "") or (None, reason) when steeropt.engine.models is not available in this install."""
    try:
        from steeropt.engine.models import describe
    except ImportError as e:
        return None, f"model shape not checked: steeropt.engine.models.describe unavailable ({e})"
    try:
        return _cached(describe, study.model), ""
    except (ModelError, SteeroptError, OSError, ValueError) as e:
        raise SpecError(study.source, "model", f"cannot read model {study.model!r}: {e}") from None


_INFO: dict = {}


def _cached(describe, ref: str):
    """describe() reads GGUF metadata (~2 s): remember it per (ref, file mtime) within a process."""
    path = Path(ref)
    key = (ref, path.stat().st_mtime_ns if path.exists() else None)
    if key not in _INFO:
        _INFO[key] = describe(ref)
    return _INFO[key]


def _check_shapes(study: StudySpec, info) -> None:
    for i, v in enumerate(study.vectors):
        if v.layer >= info.n_layers:
            raise SpecError(study.source, f"vectors.{i}.layer",
                            f"layer {v.layer} out of range: model {info.name} has layers 0..{info.n_layers - 1}")
        bad = [h for h in (v.heads or []) if h >= info.n_heads]
        if bad:
            raise SpecError(study.source, f"vectors.{i}.heads",
                            f"head(s) {bad} out of range: model {info.name} has heads 0..{info.n_heads - 1}")


def _nested(study: StudySpec) -> list[ResolvedPart]:
    """Resolve every nested name first (cheap, clear errors), then build the typed specs."""
    refs = {}
    for kind in ("search_space", "objective"):
        ref, where = study.part_ref(kind)
        refs[kind] = (ref, where, load_spec(kind, ref, **where)[1])
    out = []
    for kind in ("search_space", "objective", "judge"):
        if kind == "judge":
            found = study.part_ref("judge")  # builds the objective when the judge comes from it
            if found is None:
                continue
            refs[kind] = (*found, load_spec("judge", found[0], **found[1])[1])
        ref, where, source = refs[kind]
        spec = build(kind, ref, **where)
        out.append(ResolvedPart(kind, _name(spec), source, spec))
    return out


def _name(spec) -> str:
    return getattr(spec, "name", None) or "<inline>"


def _check_space(study: StudySpec, info, part: ResolvedPart) -> None:
    """Sites' layers, heads and vector names against the model and the study (by attribute names)."""
    file, pre = (study.source, "search_space.") if part.source == "<inline>" else (part.source, "")
    names = [v.name for v in study.vectors]
    items = [(f"sites.{i}", s, [s.layer]) for i, s in enumerate(getattr(part.value, "sites", None) or [])]
    items += [(f"kernels.{i}", k, list(k.layers)) for i, k in enumerate(getattr(part.value, "kernels", None) or [])]
    for where, item, layers in items:
        vector = getattr(item, "vector", None)
        if vector is not None and vector not in names:
            raise SpecError(file, f"{pre}{where}.vector",
                            f"unknown vector {vector!r}; the study {study.name!r} defines: {', '.join(names)}")
        if info is None:
            continue
        field = "layer" if where.startswith("sites") else "layers"
        bad = [layer for layer in layers if layer >= info.n_layers]
        if bad:
            raise SpecError(file, f"{pre}{where}.{field}",
                            f"layer {bad[0]} out of range: model {info.name} has layers 0..{info.n_layers - 1}")
        heads = [h for h in (getattr(item, "heads", None) or []) if h >= info.n_heads]
        if heads:
            raise SpecError(file, f"{pre}{where}.heads",
                            f"head(s) {heads} out of range: model {info.name} has heads 0..{info.n_heads - 1}")


def _check_rubrics(study: StudySpec, parts: list[ResolvedPart]) -> None:
    """Every rubric an objective scores with must exist in its judge (best effort, by attribute names)."""
    objective = next((p for p in parts if p.kind == "objective"), None)
    judge = next((p for p in parts if p.kind == "judge"), None)
    rubrics = getattr(judge.value, "rubrics", None) if judge else None
    scores = getattr(objective.value, "scores", None) if objective else None
    if not isinstance(rubrics, dict) or not isinstance(scores, dict):
        return
    for score, srcdef in scores.items():
        rubric = getattr(srcdef, "rubric", None)
        if rubric is not None and rubric not in rubrics:
            file, pre = (study.source, "objective.") if objective.source == "<inline>" else (objective.source, "")
            raise SpecError(file, f"{pre}scores.{score}.rubric",
                            f"rubric {rubric!r} is not defined by judge {judge.name!r} "
                            f"(it has: {', '.join(sorted(rubrics))})")
