"""Prompt families and their deterministic selection / held-out split.

A family is a named list of user prompts (one JSONL file with {"prompt": ...} per line, or an
inline list in the study spec). The strength α is chosen on the *selection* part of each family
and reported on the *held-out* part (as in AxBench), so no prompt is ever in both.

    >>> fam = PromptFamily("advice", ("How do I sleep better?", "How do I save money?", "How do I focus?"))
    >>> sel, held = split_family(fam, fraction=0.5, seed=0)
    >>> sorted(sel + held) == sorted(fam.prompts) and not set(sel) & set(held)
    True
"""
from __future__ import annotations

import difflib
import json
import random
from dataclasses import dataclass
from pathlib import Path

from steeropt.errors import SpecError

TEXT_KEYS = ("prompt", "text")  # JSONL keys read as the text of a line, in this order


@dataclass(frozen=True)
class PromptFamily:
    """A named group of prompts that gets its own deployable α."""

    name: str
    prompts: tuple[str, ...]
    source: str = "<inline>"  # file the prompts came from, for error messages and records


@dataclass(frozen=True)
class PromptSplit:
    """One family split into prompts used for choosing α and prompts used for reporting it."""

    family: str
    selection: tuple[str, ...]
    held_out: tuple[str, ...]


def missing_file(path: Path) -> SpecError:
    """"data file not found", with the closest file names next to it ("did you mean")."""
    near = sorted(p.name for p in path.parent.iterdir() if p.is_file()) if path.parent.is_dir() else []
    close = difflib.get_close_matches(path.name, near, n=2, cutoff=0.6)
    hint = f"; did you mean {' or '.join(repr(str(path.parent / c)) for c in close)}?" if close else ""
    return SpecError(str(path), None, f"data file not found{hint}")


def _key_hint(item: dict, keys: tuple[str, ...]) -> str:
    """" (did you mean 'prompt' for 'promt'?)" when a line's key is a typo of an expected one."""
    for k in item:
        close = difflib.get_close_matches(str(k), keys, n=1, cutoff=0.6)
        if close and k not in keys:
            return f"; unknown key {k!r}: did you mean {close[0]!r}?"
    return f"; it has the keys {', '.join(map(repr, item))}" if item else ""


def read_texts(path: str | Path, *, keys: tuple[str, ...] = TEXT_KEYS) -> list[str]:
    """Texts of a file: .jsonl -> one JSON string or {"prompt"|"text": ...} per line;
    anything else -> one text per non-blank line (lines starting with '#' are comments)."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise missing_file(path) from None
    except (OSError, UnicodeDecodeError) as e:
        raise SpecError(str(path), None, f"cannot read data file: {e}") from None
    if path.suffix != ".jsonl":
        return [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]
    out = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as e:
            raise SpecError(str(path), None, f"line {n}: invalid JSON ({e.msg})") from None
        hint = ""
        if isinstance(item, dict):
            hint = "" if any(k in item for k in keys) else _key_hint(item, keys)
            item = next((item[k] for k in keys if k in item), None)
        if not isinstance(item, str) or not item.strip():
            raise SpecError(str(path), None, f"line {n}: expected a non-empty string or an object with "
                                             f"one of the keys {', '.join(keys)}{hint}")
        out.append(item.strip())
    return out


def read_pairs(path: str | Path) -> list[dict]:
    """Contrast pairs from JSONL: one {"positive": str, "negative": str, "prompt": str (optional)} per line."""
    path = Path(path)
    if not path.is_file():
        raise missing_file(path)
    out = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as e:
            raise SpecError(str(path), None, f"line {n}: invalid JSON ({e.msg})") from None
        if not (isinstance(item, dict) and isinstance(item.get("positive"), str)
                and isinstance(item.get("negative"), str)):
            hint = _key_hint(item, ("prompt", "positive", "negative")) if isinstance(item, dict) else ""
            raise SpecError(str(path), None, f"line {n}: expected an object with string keys 'positive' and "
                                             f"'negative'{hint}")
        out.append({"prompt": item.get("prompt", ""), "positive": item["positive"], "negative": item["negative"]})
    if not out:
        raise SpecError(str(path), None, "no contrast pairs in file")
    return out


def make_family(name: str, prompts: list[str], *, source: str = "<inline>", field: str | None = None) -> PromptFamily:
    """Check a family (>= 2 prompts, no repeats: a repeat could land in both splits)."""
    if len(prompts) < 2:
        what = "is empty" if not prompts else "has only 1 prompt"
        raise SpecError(source, field, f"prompt family {name!r} {what}; a family needs at least 2 prompts "
                                       "(one to choose α on, one to report it on)")
    seen: set[str] = set()
    for p in prompts:
        if p in seen:
            raise SpecError(source, field, f"prompt family {name!r} repeats the prompt {p!r}")
        seen.add(p)
    return PromptFamily(name, tuple(prompts), source)


def load_family(name: str, *, path: str | Path | None = None, prompts: list[str] | None = None,
                source: str = "<inline>", field: str | None = None) -> PromptFamily:
    """A family from a JSONL/text file or an inline list (exactly one of them)."""
    if (path is None) == (prompts is None):
        raise SpecError(source, field, f"prompt family {name!r}: give exactly one of 'path' or 'prompts'")
    if path is not None:
        return make_family(name, read_texts(path), source=str(path), field=None)
    return make_family(name, [str(p).strip() for p in prompts], source=source, field=field)


def check_unique(families: list[PromptFamily], *, source: str = "<inline>", field: str | None = None) -> None:
    names = [f.name for f in families]
    dups = sorted({n for n in names if names.count(n) > 1})
    if dups:
        raise SpecError(source, field, f"duplicate prompt family names: {', '.join(dups)}")
    if not families:
        raise SpecError(source, field, "no prompt families given")


def split_family(family: PromptFamily, fraction: float = 0.5, seed: int = 0) -> tuple[list[str], list[str]]:
    """(selection, held_out): a seeded shuffle per family, each part keeps the file order.

    The rng is seeded by (seed, family name), so adding a family does not reshuffle the others.
    Both parts get at least one prompt.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    n = len(family.prompts)
    if n < 2:
        raise SpecError(family.source, None, f"prompt family {family.name!r} needs at least 2 prompts to split")
    k = min(max(round(n * fraction), 1), n - 1)
    order = list(range(n))
    random.Random(f"{seed}:{family.name}").shuffle(order)
    chosen = set(order[:k])
    selection = [p for i, p in enumerate(family.prompts) if i in chosen]
    held_out = [p for i, p in enumerate(family.prompts) if i not in chosen]
    return selection, held_out


def split_families(families: list[PromptFamily], fraction: float = 0.5, seed: int = 0) -> dict[str, PromptSplit]:
    """Split every family; family name -> PromptSplit."""
    check_unique(families)
    out = {}
    for fam in families:
        sel, held = split_family(fam, fraction, seed)
        out[fam.name] = PromptSplit(fam.name, tuple(sel), tuple(held))
    return out


def trial_prompts(spec) -> list[tuple[str, str]]:
    """(family, prompt) pairs every trial of a study spec is scored on: round-robin over families, fixed for
    the study.

    Which selection prompts are used is drawn with the study's `seed` (the split itself uses prompts.split_seed),
    so two seeds are two replicates on different prompts and the same held-out set; the selection prompts no
    trial uses are the fresh ones re-evaluation draws from (`fresh_prompts`)."""
    return _selection_order(spec)[0]


def fresh_prompts(spec) -> dict[str, list[str]]:
    """family -> the selection prompts no trial is scored on, in the seeded order re-evaluation takes them."""
    return _selection_order(spec)[1]


def _selection_order(spec):
    splits = spec.splits()
    rng = random.Random(spec.seed)
    pools = {name: rng.sample(list(s.selection), len(s.selection)) for name, s in splits.items()}
    out: list[tuple[str, str]] = []
    while len(out) < spec.budget.prompts_per_trial and any(pools.values()):
        for name, pool in pools.items():
            if pool and len(out) < spec.budget.prompts_per_trial:
                out.append((name, pool.pop(0)))
    return out, pools
