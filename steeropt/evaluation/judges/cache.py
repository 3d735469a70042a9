"""SQLite cache of judge results, shared by several workers (WAL mode, busy timeout).

Keyed by exactly what changes a score: the judge identity (backend + model + base_url, or the local
model's hash; never the API key), the scoring settings (the rubric's scale, parse, answer_prefix,
logprob settings, max_tokens and the judge's temperature and top_logprobs: `Judge.score_settings`)
and the rendered messages (system + template filled with prompt, response, concept). Labels such as
a rubric's description or style are not in the key. Only real scores are stored: a missing result
is not cached, so a later run retries it.
"""
from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
import time
from pathlib import Path

_SCHEMA = """
CREATE TABLE IF NOT EXISTS judgments (
    key TEXT PRIMARY KEY,
    identity TEXT NOT NULL,
    rubric TEXT NOT NULL,
    rubric_digest TEXT NOT NULL,
    rating REAL NOT NULL,
    score REAL NOT NULL,
    method TEXT NOT NULL,
    valid_mass REAL,
    raw TEXT,
    created REAL NOT NULL
)
"""


def cache_key(identity: str, settings: dict, messages: list[dict]) -> str:
    """Key of one judgment: the judge's identity, the settings that change a score, the rendered messages."""
    blob = json.dumps([identity, settings, messages], ensure_ascii=False, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


class JudgeCache:
    """Thread-safe within a process (one connection + lock); process-safe through SQLite WAL."""

    def __init__(self, path: str | Path, busy_timeout_s: float = 60.0):
        self.path = Path(path)
        self.busy_timeout_s = busy_timeout_s
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._pid = -1
        self._connect()

    def _connect(self) -> sqlite3.Connection:
        if self._conn is None or self._pid != os.getpid():  # a forked worker opens its own connection
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, timeout=self.busy_timeout_s, check_same_thread=False,
                                   isolation_level=None)
            conn.execute(f"PRAGMA busy_timeout={int(self.busy_timeout_s * 1000)}")
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute(_SCHEMA)
            self._conn, self._pid = conn, os.getpid()
        return self._conn

    def get_many(self, keys: list[str]) -> dict[str, dict]:
        """Cached rows by key (only the keys that are present)."""
        out: dict[str, dict] = {}
        uniq = list(dict.fromkeys(keys))
        with self._lock:
            conn = self._connect()
            for i in range(0, len(uniq), 500):  # stay under SQLite's host-parameter limit
                chunk = uniq[i:i + 500]
                rows = conn.execute(
                    f"SELECT key, rating, score, method, valid_mass, raw FROM judgments "
                    f"WHERE key IN ({','.join('?' * len(chunk))})", chunk).fetchall()
                for k, rating, score, method, mass, raw in rows:
                    out[k] = {"rating": rating, "score": score, "method": method, "valid_mass": mass, "raw": raw}
        return out

    def put_many(self, rows: list[dict]) -> None:
        """rows: dicts with key, identity, rubric, rubric_digest, rating, score, method, valid_mass, raw."""
        if not rows:
            return
        now = time.time()
        values = [(r["key"], r["identity"], r["rubric"], r["rubric_digest"], r["rating"], r["score"],
                   r["method"], r["valid_mass"], r["raw"], now) for r in rows]
        with self._lock:
            conn = self._connect()
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.executemany("INSERT OR REPLACE INTO judgments VALUES (?,?,?,?,?,?,?,?,?,?)", values)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise

    def __len__(self) -> int:
        with self._lock:
            return self._connect().execute("SELECT COUNT(*) FROM judgments").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            if self._conn is not None and self._pid == os.getpid():
                self._conn.close()
            self._conn = None

    def __repr__(self) -> str:
        return f"JudgeCache({str(self.path)!r})"
