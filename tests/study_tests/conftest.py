"""Tiny study specs on the real embedded model, real Optuna SQLite storage and a real MLflow store."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "studies" / "data"


def tiny_spec(tmp_path: Path, name: str = "tiny", **over) -> Path:
    """A study small enough for tests: 2 prompts per trial, 12 new tokens, cheap objective."""
    spec = {
        "name": name,
        "vectors": [{"name": "wedding", "method": "diff_in_means", "layer": 4,
                     "positive": str(DATA / "wedding_positive.txt"), "negative": str(DATA / "wedding_neutral.txt")}],
        "concept": {"name": "wedding", "description": "weddings and marriage",
                    "keywords": ["wedding", "bride", "groom", "marriage", "celebration", "love"]},
        "prompts": {"families": [{"name": "open_ended", "path": str(DATA / "open_ended.jsonl")},
                                 {"name": "advice", "path": str(DATA / "advice.jsonl")}]},
        "decoding": {"max_new_tokens": 12},
        "search_space": "wedding-add-l4",
        "objective": "cheap-only",
        "optimizer": {"name": "random"},
        "budget": {"trials": 4, "batch_size": 2, "prompts_per_trial": 2},
        "seed": 0,
        "storage": f"sqlite:///{tmp_path / 'study.db'}",
        "tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
    }
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(spec.get(key), dict):
            spec[key] = {**spec[key], **value}
        else:
            spec[key] = value
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


@pytest.fixture
def make_spec(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # runs/, judge cache and any default files stay in the test's directory
    return lambda **kw: tiny_spec(tmp_path, **kw)
