"""SQLite cache: WAL, concurrent writers from several processes, missing never stored, keyed on what changes a score."""
from __future__ import annotations

import multiprocessing as mp
import sqlite3

import pytest

from steeropt.evaluation.judges.base import Judge, JudgeRequest
from steeropt.evaluation.judges.cache import JudgeCache, cache_key
from steeropt.evaluation.judges.config import JudgeSpec, Rubric
from steeropt.evaluation.judges.scoring import Rating


def _writer(path: str, worker: int, n: int) -> None:
    cache = JudgeCache(path)
    for i in range(n):
        cache.put_many([{"key": f"{worker}-{i}", "identity": "t", "rubric": "r", "rubric_digest": "d",
                         "rating": 1.0, "score": 0.5, "method": "parsed", "valid_mass": None, "raw": "x"}])
    cache.close()


def test_wal_and_several_processes(tmp_path):
    path = tmp_path / "c.sqlite"
    JudgeCache(path).close()
    assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(str(path), w, 50)) for w in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    cache = JudgeCache(path)
    assert len(cache) == 150
    assert cache.get_many(["0-0", "2-49", "nope"]).keys() == {"0-0", "2-49"}


def test_key_depends_on_every_part():
    base = ("openai:m@u", {"max_tokens": 4, "temperature": 0.0}, [{"role": "user", "content": "p r c"}])
    keys = {cache_key(*base)}
    keys.add(cache_key(base[0] + "x", *base[1:]))
    keys.add(cache_key(base[0], {**base[1], "temperature": 0.5}, base[2]))
    keys.add(cache_key(base[0], base[1], [{"role": "user", "content": "p r c!"}]))
    assert len(keys) == 4


class CountingJudge(Judge):
    """A real Judge (cache lookup, keys, storage) over a backend that rates every response 1 and counts calls."""

    backend = "counting"

    @property
    def identity(self) -> str:
        return "counting:v1"

    def _rate(self, requests):
        return [(Rating(1.0, "parsed"), "Rating: [[1]]") for _ in requests]


def _spec(**rubric_over) -> JudgeSpec:
    rubric = Rubric(template="Rate {response} about {concept}.", description="d", style="axbench")
    return JudgeSpec(name="c", backend="openai", rubrics={"r": rubric.model_copy(update=rubric_over)})


def _calls_after_first_run(tmp_path, spec: JudgeSpec) -> int:
    """Backend calls a second judge with `spec` makes after a first judge with the default spec filled the cache."""
    reqs = [JudgeRequest("r", "p", "resp", "weddings")]
    first = CountingJudge(_spec(), JudgeCache(tmp_path / "c.sqlite"))
    first.judge(reqs)
    first.close()
    again = CountingJudge(spec, JudgeCache(tmp_path / "c.sqlite"))
    again.judge(reqs)
    again.close()
    return again.stats.calls


@pytest.mark.parametrize("change", [{"temperature": 0.7}, {"top_logprobs": 5}, {"max_tokens": 8},
                                    {"answer_prefix": "Rating: [["}, {"min_valid_mass": 0.5},
                                    {"template": "Rate {response}."}])
def test_settings_that_change_a_score_change_the_key(tmp_path, change):
    spec = _spec()
    judge_level = {k: v for k, v in change.items() if k in JudgeSpec.model_fields}
    spec = spec.model_copy(update=judge_level) if judge_level else _spec(**change)
    assert _calls_after_first_run(tmp_path, spec) == 1


@pytest.mark.parametrize("change", [{"description": "other words"}, {"style": "custom"}])
def test_labels_do_not_change_the_key(tmp_path, change):
    assert _calls_after_first_run(tmp_path, _spec(**change)) == 0
    assert _calls_after_first_run(tmp_path, _spec().model_copy(update={"description": "x"})) == 0
