"""Typed specs from names, paths or inline mappings (layer 3 of loader -> index -> factory).

    >>> spec = build("study", "wedding-add")                  # doctest: +SKIP
    >>> raw, source = load_spec("objective", "tiered-default")  # doctest: +SKIP

The registry maps a kind to "module:Class", imported only when that kind is built. The class
is validated with `model_validate(data, context={"base_dir": Path, "source": str, "search_paths": list})`
so validators can resolve relative paths against the spec file's directory. If the class declares
private attributes `_source`, `_base_dir` or `_search_paths`, they are set after validation.
"""
from __future__ import annotations

import difflib
import importlib
from pathlib import Path
from typing import Any, get_args, get_origin

from pydantic import BaseModel, ValidationError

from steeropt.errors import SpecError
from steeropt.specs import index
from steeropt.specs.loader import SPEC_SUFFIXES, apply_includes, read_spec_file

REGISTRY = {
    "study": "steeropt.specs.study:StudySpec",
    "search_space": "steeropt.search.spaces:SearchSpaceSpec",
    "objective": "steeropt.evaluation.objectives.config:ObjectiveSpec",
    "judge": "steeropt.evaluation.judges.config:JudgeSpec",
}
INLINE = "<inline>"


class FieldError(ValueError):
    """Raise inside a validator to point the resulting SpecError at a sub-field of the model."""

    def __init__(self, field: str, message: str):
        self.field = field
        super().__init__(message)


def register_kind(kind: str, folder: str, target: str) -> None:
    """Add (or replace) a spec kind: its folder name and its "module:Class"."""
    index.FOLDERS[kind] = folder
    REGISTRY[kind] = target


def spec_class(kind: str) -> type[BaseModel]:
    """Import the pydantic class of a kind (lazily: other kinds' modules may be heavy or absent)."""
    index.folder_of(kind)
    module, _, attr = REGISTRY[kind].partition(":")
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as e:
        raise SpecError(None, None, f"spec kind {kind!r} needs {REGISTRY[kind]}, which cannot be imported: {e}") from e


def _looks_like_path(ref: str) -> bool:
    return ref.endswith(SPEC_SUFFIXES) or "/" in ref or "\\" in ref


def _where(origin: tuple[str | None, str | None] | None) -> tuple[str | None, str | None]:
    return origin if origin else (None, None)


def locate(kind: str, ref: str | Path, *, search_paths=None, base_dir: Path | None = None,
           origin: tuple[str | None, str | None] | None = None) -> Path:
    """The file a name or path refers to. Relative paths resolve against base_dir, then the cwd."""
    file, field = _where(origin)
    ref_s = str(ref)
    if isinstance(ref, Path) or _looks_like_path(ref_s):
        path = Path(ref_s).expanduser()
        if not path.is_absolute():
            tries = [base_dir / path] if base_dir else []
            path = next((t for t in tries if t.is_file()), Path.cwd() / path)
        if not path.is_file():
            raise SpecError(file or str(path), field, f"{kind} file not found: {ref_s} (looked for {path.resolve()})")
        return path.resolve()
    try:
        return index.find(kind, ref_s, search_paths).path
    except SpecError as e:
        raise SpecError(file, field, e.message) from None


def load_spec(kind: str, ref: str | Path | dict, *, search_paths: list[Path] | None = None,
              base_dir: Path | None = None, origin: tuple[str | None, str | None] | None = None) -> tuple[dict, str]:
    """Resolved raw mapping (includes applied) and its source: the file path or "<inline>".

    origin=(file, field) says where an inline mapping or a name was written, for error messages;
    base_dir is the directory relative includes/paths of an inline mapping are resolved against.
    """
    index.folder_of(kind)
    if isinstance(ref, dict):
        file, field = _where(origin)
        where = file or INLINE
        data = apply_includes(ref, base_dir or Path.cwd(), where)
        return data, INLINE
    if not isinstance(ref, (str, Path)) or not str(ref):
        file, field = _where(origin)
        raise SpecError(file, field, f"expected a {kind} name, a path to a .yaml file or a mapping, got {ref!r}")
    path = locate(kind, ref, search_paths=search_paths, base_dir=base_dir, origin=origin)
    return read_spec_file(path), str(path)


def build(kind: str, ref: str | Path | dict, *, search_paths: list[Path] | None = None,
          base_dir: Path | None = None, origin: tuple[str | None, str | None] | None = None) -> BaseModel:
    """Load and validate a spec into its typed pydantic model; any problem raises SpecError."""
    data, source = load_spec(kind, ref, search_paths=search_paths, base_dir=base_dir, origin=origin)
    cls = spec_class(kind)
    if source == INLINE:
        file, prefix = _where(origin)
        here = base_dir or Path.cwd()
    else:
        file, prefix, here = source, None, Path(source).parent
    context = {"base_dir": here, "source": file or INLINE, "search_paths": list(search_paths or [])}
    try:
        model = cls.model_validate(data, context=context)
    except ValidationError as e:
        raise spec_error(e, file, cls, prefix) from None
    private = getattr(type(model), "__private_attributes__", {})
    for attr, value in (("_source", file or INLINE), ("_base_dir", here),
                        ("_search_paths", list(search_paths or []))):
        if attr in private:
            setattr(model, attr, value)
    return model


def list_specs(kind: str, *, search_paths: list[Path] | None = None) -> list[index.SpecEntry]:
    """All specs of one kind visible from here, sorted by name (for `steeropt list`)."""
    return sorted(index.scan(kind, search_paths).values(), key=lambda e: e.name)


# --- ValidationError -> SpecError -------------------------------------------------------------

def spec_error(err: ValidationError, file: str | None, cls: type | None = None, prefix: str | None = None) -> SpecError:
    """First error becomes the SpecError's field and message; the others are summarised after it."""
    items = [_one(e, cls) for e in err.errors()]
    if prefix:
        items = [(f"{prefix}.{f}" if f else prefix, m) for f, m in items]
    field, message = items[0]
    if len(items) > 1:
        rest = "; ".join(f"field '{f}': {m}" if f else m for f, m in items[1:4])
        more = f" (+{len(items) - 4} more)" if len(items) > 4 else ""
        message += f". Also: {rest}{more}"
    return SpecError(file, field or None, message)


def _one(e: dict, cls: type | None) -> tuple[str, str]:
    loc = [str(p) for p in e.get("loc", ())]
    msg, kind = e.get("msg", ""), e.get("type", "")
    exc = (e.get("ctx") or {}).get("error")
    if isinstance(exc, FieldError):
        return ".".join([*loc, exc.field]), str(exc)
    if kind == "extra_forbidden":
        allowed = _allowed_keys(cls, loc[:-1])
        close = difflib.get_close_matches(loc[-1], allowed, n=1, cutoff=0.6) if allowed else []
        hint = f" did you mean '{close[0]}'?" if close else ""
        listed = f" Allowed keys: {', '.join(allowed)}." if allowed else ""
        return ".".join(loc), f"unknown key '{loc[-1]}'.{hint}{listed}"
    if kind == "missing":
        return ".".join(loc), "required field is missing"
    if kind == "value_error":
        msg = msg.removeprefix("Value error, ")
    elif "input" in e and not isinstance(e["input"], (dict, list)):
        msg = f"{msg} (got {e['input']!r})"
    return ".".join(loc), msg


def _allowed_keys(cls: type | None, loc: list[str]) -> list[str]:
    """Field names of the model reached by walking `loc` through the annotations (best effort)."""
    tp: Any = cls
    for part in loc:
        if part.isdigit():
            continue  # list index: _model_in looks through list[...]
        mapping = _dict_value(tp)
        if mapping is not None:
            tp = mapping  # a key of dict[str, Model]
            continue
        model = _model_in(tp)
        if model is None or part not in model.model_fields:
            return []
        tp = model.model_fields[part].annotation
    model = _model_in(tp)
    return sorted(model.model_fields) if model else []


def _dict_value(tp: Any) -> Any:
    """V of dict[str, V] (also inside Optional), else None."""
    if get_origin(tp) is dict:
        return get_args(tp)[1]
    dicts = [a for a in get_args(tp) if get_origin(a) is dict]
    return get_args(dicts[0])[1] if len(dicts) == 1 else None


def _model_in(tp: Any) -> type[BaseModel] | None:
    """The single pydantic model inside tp (through Optional / list / dict), if any."""
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return tp
    if get_origin(tp) is not None or get_args(tp):
        found = [m for a in get_args(tp) if (m := _model_in(a)) is not None]
        return found[0] if len(found) == 1 else None
    return None
