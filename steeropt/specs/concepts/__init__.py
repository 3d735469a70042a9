"""Built-in concept sets: contrast texts, keywords and a judge description for one concept."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml

from steeropt.errors import SteeroptError

_HERE = Path(__file__).parent


@dataclass
class Concept:
    name: str
    description: str
    keywords: list[str]
    positive: list[str] = field(default_factory=list)
    negative: list[str] = field(default_factory=list)
    positive_completions: list[str] = field(default_factory=list)
    negative_completions: list[str] = field(default_factory=list)
    prompts: list[str] = field(default_factory=list)
    layer: int | None = None


def builtin_concepts() -> list[str]:
    return sorted(p.stem for p in _HERE.glob("*.yaml"))


def load_concept(ref: str) -> Concept:
    """A built-in concept by name, or a YAML file with the same keys."""
    path = Path(ref) if ref.endswith((".yaml", ".yml")) else _HERE / f"{ref}.yaml"
    if not path.is_file():
        raise SteeroptError(f"unknown concept '{ref}'; built-in: {', '.join(builtin_concepts())}")
    data = yaml.safe_load(path.read_text()) or {}
    try:
        return Concept(**data)
    except TypeError as exc:
        raise SteeroptError(f"{path}: {exc}") from exc
