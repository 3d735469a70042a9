"""SQLite cache: WAL, concurrent writers from several processes, missing never stored."""
from __future__ import annotations

import multiprocessing as mp
import sqlite3

from steeropt.evaluation.judges.cache import JudgeCache, cache_key


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
    base = ("openai:m@u", "d", "p", "r", "c")
    keys = {cache_key(*base)}
    for i in range(5):
        parts = list(base)
        parts[i] += "x"
        keys.add(cache_key(*parts))
    assert len(keys) == 6
