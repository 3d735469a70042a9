"""Plain YAML loading with `include:` (layer 1 of loader -> index -> factory).

A spec file is a YAML mapping. `include:` (a relative path or a list of them) pulls shared
templates first; later includes override earlier ones and the file's own keys override all
(mappings merge deeply, everything else is replaced). Shared fragments end in `.part.yaml`
so the index never registers them as specs.

    >>> data = read_spec_file(Path("studies/wedding.yaml"))  # doctest: +SKIP
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from steeropt.errors import SpecError

FRAGMENT_SUFFIXES = (".part.yaml", ".part.yml")  # shared templates: includable, never indexed
DATA_SUFFIXES = (".calibration.yaml",)  # data a spec names by file (judge calibrations): never indexed
SPEC_SUFFIXES = (".yaml", ".yml")


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate keys (PyYAML silently keeps the last one)."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    loader.flatten_mapping(node)
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (first at line {seen[key] + 1})", key_node.start_mark)
        seen[key] = key_node.start_mark.line
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def is_fragment(path: Path) -> bool:
    return path.name.endswith(FRAGMENT_SUFFIXES + DATA_SUFFIXES)


def read_yaml(path: Path) -> dict:
    """Parse one YAML file into a mapping; syntax errors become SpecError with the line."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError(str(path), None, "file not found") from None
    except OSError as e:
        raise SpecError(str(path), None, f"cannot read file: {e}") from None
    try:
        data = yaml.load(text, Loader=_StrictLoader)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        what = ": ".join(str(s) for s in (e.context, e.problem) if s)
        raise SpecError(str(path), None, f"YAML syntax error at {where}{what}") from None
    except yaml.YAMLError as e:
        raise SpecError(str(path), None, f"YAML error: {e}") from None
    if data is None:
        raise SpecError(str(path), None, "file is empty (expected a mapping of keys)")
    if not isinstance(data, dict):
        raise SpecError(str(path), None, f"expected a mapping of keys at top level, got {type(data).__name__}")
    return data


def deep_merge(base: dict, over: dict) -> dict:
    """Return base updated by over; nested mappings merge, other values (lists too) are replaced."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def include_list(value: Any, file: str) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    raise SpecError(file, "include", f"expected a relative path or a list of paths, got {value!r}")


def apply_includes(data: dict, base_dir: Path, file: str, _chain: tuple[Path, ...] = ()) -> dict:
    """Resolve `include:` in `data` (paths relative to base_dir); local keys win."""
    if "include" not in data:
        return data
    merged: dict = {}
    for rel in include_list(data["include"], file):
        target = (base_dir / rel).resolve()
        if target in _chain:
            names = " -> ".join(p.name for p in (*_chain, target))
            raise SpecError(file, "include", f"include cycle: {names}")
        if not target.is_file():
            raise SpecError(file, "include", f"included file not found: {rel} (looked for {target})")
        merged = deep_merge(merged, _read_with_includes(target, (*_chain, target)))
    local = {k: v for k, v in data.items() if k != "include"}
    return deep_merge(merged, local)


def _read_with_includes(path: Path, chain: tuple[Path, ...]) -> dict:
    data = read_yaml(path)
    return apply_includes(data, path.parent, str(path), chain)


def read_spec_file(path: Path) -> dict:
    """Read a spec file with all includes applied."""
    path = Path(path).resolve()
    return _read_with_includes(path, (path,))
