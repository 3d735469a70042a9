"""Name -> file index over the search paths (layer 2 of loader -> index -> factory).

A spec's name is the `name:` key written inside its file (the file stem if it has none).
Search order for a kind whose folder is e.g. `objectives/`:
  1. explicit search paths (each path P: `P/objectives` if that folder exists, else P itself),
  2. directories in the STEEROPT_SPEC_PATH environment variable (os.pathsep separated, same rule),
  3. `./objectives` in the current working directory,
  4. the built-in presets: `steeropt/presets/objectives` in an installed wheel, or
     `<repo root>/objectives` in a source checkout.
Earlier roots shadow later ones (that is how a user overrides a preset); two files with the
same name inside one root are ambiguous and get a warning.
"""
from __future__ import annotations

import difflib
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import yaml

import steeropt
from steeropt.errors import SpecError
from steeropt.specs.loader import SPEC_SUFFIXES, is_fragment

FOLDERS = {"study": "studies", "search_space": "search_spaces", "objective": "objectives", "judge": "judges"}


@dataclass(frozen=True)
class SpecEntry:
    """One indexed spec file."""

    kind: str
    name: str
    path: Path
    root: Path  # the search directory it was found in
    description: str = ""


def builtin_dir(folder: str) -> Path:
    """Where the built-in presets of one folder live (wheel or source checkout)."""
    pkg = Path(steeropt.__file__).resolve().parent
    packaged = pkg / "presets" / folder
    if packaged.is_dir():
        return packaged
    return pkg.parent / folder  # source / editable checkout: <repo root>/<folder>


def search_dirs(kind: str, search_paths: list[Path] | None = None) -> list[Path]:
    """Existing directories to search for specs of `kind`, in priority order, without repeats."""
    folder = folder_of(kind)
    env = [p for p in os.environ.get("STEEROPT_SPEC_PATH", "").split(os.pathsep) if p]
    candidates = []
    for p in [*(search_paths or []), *env]:
        p = Path(p).expanduser()
        candidates.append(p / folder if (p / folder).is_dir() else p)
    candidates += [Path.cwd() / folder, builtin_dir(folder)]
    out: list[Path] = []
    for c in candidates:
        c = c.resolve()
        if c.is_dir() and c not in out:
            out.append(c)
    return out


def folder_of(kind: str) -> str:
    if kind not in FOLDERS:
        raise SpecError(None, None, f"unknown spec kind {kind!r}; known kinds: {', '.join(sorted(FOLDERS))}")
    return FOLDERS[kind]


def _peek(path: Path) -> tuple[str, str]:
    """(name, description) from a file's own top-level keys; the stem if unreadable or unnamed."""
    stem = path.name.rsplit(".", 1)[0]
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, OSError, UnicodeDecodeError):
        return stem, ""  # indexed by stem so a lookup reaches the file and reports the real error
    if not isinstance(data, dict):
        return stem, ""
    name = data.get("name", stem)
    desc = data.get("description", "")
    return (name if isinstance(name, str) and name else stem), (desc if isinstance(desc, str) else "")


def scan(kind: str, search_paths: list[Path] | None = None) -> dict[str, SpecEntry]:
    """Index all specs of one kind: name -> entry (earlier roots win)."""
    index: dict[str, SpecEntry] = {}
    for root in search_dirs(kind, search_paths):
        here: dict[str, SpecEntry] = {}
        files = sorted(p for p in root.rglob("*") if p.name.endswith(SPEC_SUFFIXES) and not is_fragment(p)
                       and not any(part.startswith(".") for part in p.relative_to(root).parts))
        for path in files:
            name, desc = _peek(path)
            if name in here:
                warnings.warn(f"duplicate {kind} name {name!r}: {here[name].path} and {path}; using the first",
                              stacklevel=3)
                continue
            here[name] = SpecEntry(kind, name, path, root, desc)
        for name, entry in here.items():
            index.setdefault(name, entry)
    return index


def find(kind: str, name: str, search_paths: list[Path] | None = None) -> SpecEntry:
    """Look a name up; unknown names raise SpecError with "did you mean" and the known names."""
    index = scan(kind, search_paths)
    if name in index:
        return index[name]
    known = sorted(index)
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
    hint = f" did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    roots = ", ".join(str(d) for d in search_dirs(kind, search_paths)) or "(no search directories exist)"
    listed = ", ".join(known) if known else "(none)"
    raise SpecError(None, None, f"unknown {kind} {name!r}.{hint} Known {kind} names: {listed}. Searched: {roots}")
