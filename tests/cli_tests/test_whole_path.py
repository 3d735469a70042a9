"""From an empty folder to a deployable profile with the real CLI on the embedded model, for a concept that is
not shipped: new concept -> (edit) -> new study --from-sweep -> validate -> run -> status -> pick.
The README walk-through ("Your own concept") is these commands."""
from __future__ import annotations

import re

import yaml

from steeropt.specs import build

from .conftest import fill_concept, steeropt

STEPS = [  # (command, COLUMNS) as the README shows them
    ["new", "concept", "ocean"],
    ["new", "study", "ocean", "--concept", "ocean", "--from-sweep", "--sweep-layers", "10", "--sweep-prompts", "3",
     "--trials", "4", "--batch-size", "2", "--prompts-per-trial", "3", "--max-new-tokens", "16"],
    ["validate", "ocean"],
    ["run", "ocean"],
    ["status", "ocean"],
    ["pick", "ocean", "--out", "profiles/ocean"],
]


def _oneline(text: str) -> str:
    return " ".join(text.split())


def test_empty_folder_to_profile(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert not any(tmp_path.iterdir())

    r = steeropt(*STEPS[0], cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    concept = tmp_path / "concepts" / "ocean.yaml"
    assert concept.is_file() and "steeropt sweep --concept ocean" in r.stdout
    fill_concept(concept)  # the user's edit: description, keywords, 8 matched pairs

    r = steeropt(*STEPS[1], cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    out = _oneline(r.stdout)
    assert "layer 10: keyword rate" in out and re.search(r"α range \[[\d.]+, [\d.]+\]", out), out
    study = tmp_path / "studies" / "ocean.yaml"
    space = tmp_path / "search_spaces" / "ocean.yaml"
    assert study.is_file() and space.is_file() and (tmp_path / "studies" / "data" / "advice.jsonl").is_file()
    assert "--from-sweep" in study.read_text()  # the reasons are kept in the study's header
    spec = build("study", "ocean")  # found by name from the folder
    assert spec.budget.trials == 4 and spec.decoding.max_new_tokens == 16 and spec.vectors[0].layer == 10
    alpha = yaml.safe_load(space.read_text())["sites"][0]["alpha"]
    assert 0.0 <= alpha["low"] < alpha["high"] <= 0.8 + 0.8 / 6 + 1e-9, alpha  # swept α 0..0.8, at most one step past

    r = steeropt(*STEPS[2], cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    held = [p for s in spec.splits().values() for p in s.held_out]
    assert held and all(_oneline(p) in _oneline(r.stdout) for p in held), r.stdout  # every held-out prompt is named
    assert all(len(line) <= 80 for line in r.stdout.splitlines()), r.stdout

    r = steeropt(*STEPS[3], cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    logs = [ln for ln in r.stderr.splitlines() if re.search(r"ocean trials \d+/4 \|", ln)]
    assert len(logs) == 2, r.stderr  # 4 trials in batches of 2: one plain line per finished batch
    assert "ocean trials 0/4 done before this run" in r.stderr
    assert re.search(r"trials 4/4 \| judge calls 0 \| front \d+ \| HV [\d.]+ \| elapsed \S+ \| ETA 0m00s", logs[-1])
    assert "trials 2/4" in logs[0]

    for columns in (80, 120):
        r = steeropt(*STEPS[4], cwd=tmp_path, columns=columns)
        assert r.returncode == 0, r.stderr
        lines = r.stdout.splitlines()
        assert all(len(line) <= columns for line in lines), r.stdout
        storage = next(line for line in lines if line.strip().startswith("storage"))
        assert storage.strip().endswith("steeropt.db") and "sqlite:///" in storage  # elided in the middle, one line
        assert "Pareto front of 'ocean'" in r.stdout and "of 4 trials" in r.stdout

    r = steeropt(*STEPS[5], cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    profile = yaml.safe_load((tmp_path / "profiles" / "ocean" / "profile.yaml").read_text())
    assert set(profile["families"]) == {"open_ended", "advice", "descriptions"}, profile.keys()
