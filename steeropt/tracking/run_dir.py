"""The files of one study under runs/<study>/: where the runner writes them and the readers find them.

    runs/<study>/trial-00012.jsonl   one trial's samples (JSON lines: prompt, text, scores, ...)
    runs/<study>/baseline.jsonl      the unsteered answers to the trial prompts (family, prompt, text)
    runs/<study>/arms.json           the unsteered and prompted arms' summaries; arm_<name>.jsonl their samples
    runs/<study>/timing.json         this process's seconds per phase
    runs/<study>/trials.csv, front.*, dose_fits.png, summary.json, reevaluation.csv   (report.analysis, pick)
"""
from __future__ import annotations

import json
from pathlib import Path


def samples_file(runs_dir: Path, number: int) -> Path:
    """Where the runner keeps a trial's samples (JSON lines)."""
    return Path(runs_dir) / f"trial-{number:05d}.jsonl"


def baseline_file(runs_dir: Path) -> Path:
    """The unsteered answers to the trial prompts (JSON lines: family, prompt, text), next to the samples."""
    return Path(runs_dir) / "baseline.jsonl"


def arms_file(runs_dir: Path) -> Path:
    """The arms' summaries (runner.arms)."""
    return Path(runs_dir) / "arms.json"


def arm_samples_file(runs_dir: Path, arm: str) -> Path:
    """One arm's samples (JSON lines)."""
    return Path(runs_dir) / f"arm_{arm}.jsonl"


def timing_file(runs_dir: Path) -> Path:
    """Seconds per phase of the process that ran the study (steeropt.timing)."""
    return Path(runs_dir) / "timing.json"


def dumps_jsonl(records: list[dict]) -> str:
    return "".join(json.dumps(r, default=str) + "\n" for r in records)


def write_baseline(runs_dir: Path, samples) -> Path:
    """Keep the study's unsteered samples on disk, so traces show them beside the steered answers."""
    path = baseline_file(runs_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(dumps_jsonl([{"family": s.family, "prompt": s.prompt, "text": s.text} for s in samples]))
    return path


def read_baseline(runs_dir: Path) -> dict[tuple[str, str], str]:
    path = baseline_file(runs_dir)
    if not path.exists():
        return {}
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return {(r["family"], r["prompt"]): r["text"] for r in rows}
