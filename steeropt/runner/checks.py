"""What a study checks before it starts, and a stop while it runs.

Before the model loads: the study storage opens (a corrupt SQLite file, a wrong PostgreSQL password, an
unreachable server or a missing driver is one message naming the redacted URL and the fix), and the run
directory can be written. A local SQLite MLflow store is opened under a lock (`store_lock`). While it runs: `JudgeWatch` stops the study after `JUDGE_DEAD_AFTER` consecutive
trials in which the judge answered nothing (every judgment missing); those trials go back to the queue
instead of spending the budget.
"""
from __future__ import annotations

import os
import socket
import sqlite3
import warnings
from pathlib import Path

import sqlalchemy

from steeropt import redact as secrets
from steeropt.errors import JudgeError, SteeroptError
from steeropt.redact import redact

POSTGRES_FIX = "pip install 'steeropt[postgres]' (the psycopg2 driver)"
JUDGE_DEAD_AFTER = 3  # consecutive trials with every judgment missing before the study stops
CONNECT_TIMEOUT_S = 10


def register_secrets(spec, judge_spec=None) -> None:
    """Teach redaction the secrets a study holds: passwords in its storage, tracking and judge URLs, and the
    API key its judge reads from the environment."""
    secrets.register_url(spec.storage)
    secrets.register_url(spec.tracking_uri)
    secrets.register_url(getattr(judge_spec, "base_url", None))
    secrets.register_env(getattr(judge_spec, "api_key_env", None))


def sqlite_path(url: str) -> Path | None:
    """The database file of a sqlite:/// URL (None for an in-memory database)."""
    rest = url.split("://", 1)[1].split("?", 1)[0]
    if rest in ("", "/", "/:memory:"):
        return None
    return Path(rest[1:] if rest.startswith("/") else rest).expanduser()


def check_storage(url: str, *, write: bool = True) -> None:
    """Open the study storage and fail with one clear message if it cannot be used (creates nothing)."""
    shown = redact(url)
    if url.startswith("sqlite:"):
        _check_sqlite(url, shown, write)
        return

    kw = {"connect_args": {"connect_timeout": CONNECT_TIMEOUT_S}} if url.startswith("postgresql") else {}
    try:
        engine = sqlalchemy.create_engine(url, **kw)
    except ModuleNotFoundError as exc:
        fix = POSTGRES_FIX if url.startswith("postgres") else f"install the database driver ({exc.name})"
        raise SteeroptError(f"storage {shown} is unreachable: No module named '{exc.name}': {fix}") from None
    except Exception as exc:  # noqa: BLE001  (a malformed URL, an unknown dialect)
        raise SteeroptError(f"storage {shown} is not a usable database URL: {type(exc).__name__}: "
                            f"{redact(str(exc))[:200]}") from None
    try:
        with engine.connect():
            pass
    except Exception as exc:  # noqa: BLE001
        raise SteeroptError(f"storage {shown} is unreachable: {_db_reason(exc)}") from None
    finally:
        engine.dispose()


def _db_reason(exc: Exception) -> str:
    """The driver's first line, and what to do about the usual causes."""
    orig = getattr(exc, "orig", None) or exc
    first = redact(str(orig).strip().splitlines()[0] if str(orig).strip() else type(orig).__name__)[:300]
    low = first.lower()
    if "password authentication failed" in low or "no password supplied" in low or "access denied" in low:
        hint = "check the user name and password in the storage URL"
    elif "does not exist" in low and "database" in low:
        hint = "create the database first (createdb), or name an existing one"
    elif "connection refused" in low or "could not connect" in low or "timeout" in low or "timed out" in low \
            or "could not translate host" in low or "name or service not known" in low:
        hint = "is the database server running and listening at that host and port?"
    else:
        hint = "check the storage URL"
    return f"{type(orig).__name__}: {first} ({hint})"


def _check_sqlite(url: str, shown: str, write: bool) -> None:
    path = sqlite_path(url)
    if path is None:
        return
    parent = path.resolve().parent
    if not parent.is_dir():
        raise SteeroptError(f"storage {shown}: directory {parent} does not exist (create it, or point storage "
                            "at an existing directory)")
    if path.exists():
        if not path.is_file():
            raise SteeroptError(f"storage {shown}: {path} is not a file")
        try:
            con = sqlite3.connect(f"file:{path.resolve()}?mode=ro", uri=True, timeout=30)
            try:
                con.execute("SELECT count(*) FROM sqlite_master").fetchone()
            finally:
                con.close()
        except sqlite3.DatabaseError as exc:
            raise SteeroptError(f"storage {shown}: {path} is not a usable SQLite database ({exc}); move it aside "
                                "or point storage at another file") from None
        if write and not os.access(path, os.W_OK):
            raise SteeroptError(f"storage {shown}: {path} is read-only")
    if write and not os.access(parent, os.W_OK | os.X_OK):
        raise SteeroptError(f"storage {shown}: directory {parent} is not writable (SQLite writes its journal there)")


def check_runs_dir(path: Path) -> None:
    """The study's run directory (runs/<study>) exists as a writable directory or can be created."""
    path = Path(path)
    probe = path
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        raise SteeroptError(f"run directory {path}: {probe} exists and is not a directory")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise SteeroptError(f"run directory {path}: {probe} is not writable")


def _alive(pid: int) -> bool:
    """Whether process `pid` of this host runs (a zombie, killed but not yet reaped, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state not in ("Z", "X")


def check_sole_runner(optimizer) -> None:
    """A `run` without heartbeats treats every RUNNING trial as left by a crash. Refuse when one of them was asked
    by a process of this host that still runs: that is a live runner, whose trial must not be failed as stale."""
    if optimizer.heartbeat_interval:
        return  # heartbeats (Optuna's fail_stale_trials) tell stale trials from live ones
    from optuna.trial import TrialState

    host, me, live = socket.gethostname(), os.getpid(), {}
    for t in optimizer.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        h, _, pid = str(t.user_attrs.get("worker", "")).rpartition(":")
        if h == host and pid.isdigit() and int(pid) != me and _alive(int(pid)):
            live.setdefault(f"{h}:{pid}", []).append(t.number)
    if live:
        who = "; ".join(f"trial(s) {', '.join(map(str, n))} in process {w}" for w, n in live.items())
        raise SteeroptError(f"study '{optimizer.study.study_name}' is being run by another live process ({who}): a "
                            "second `steeropt run` would fail its trials as stale. Wait for it to finish, or add "
                            "processes with `steeropt worker` (with optimizer.settings.heartbeat_interval set, stale "
                            "trials are then told apart from live ones by heartbeat)")


class JudgeUnreachable(JudgeError):
    """The judge answered none of the last trials: the study stops instead of spending its budget."""


class JudgeWatch:
    """Counts consecutive trials in which every judgment came back missing; at `after` of them, re-queues those
    trials (Optuna's retry callback: same params, WAITING; the budget counts the retry, not the failure) and
    stops the study."""

    def __init__(self, after: int = JUDGE_DEAD_AFTER):
        self.after, self.numbers, self.reasons = after, [], {}

    @staticmethod
    def unanswered(res) -> bool:
        """Whether the judge answered nothing for this evaluated trial (it asked, every judged sample missing)."""
        c = getattr(res, "counts", None) or {}
        judged = c.get("samples", 0) - c.get("filtered", 0)
        return bool(c.get("judge_calls")) and judged > 0 and c.get("missing", 0) >= judged

    def see(self, number: int, res) -> None:
        """Record one told trial's result."""
        if self.unanswered(res):
            self.numbers.append(number)
            for k, v in (res.counts.get("missing_reasons") or {}).items():
                self.reasons[k] = self.reasons.get(k, 0) + v
        elif getattr(res, "counts", None):
            self.numbers, self.reasons = [], {}

    def check(self, judge_identity: str, optuna_study) -> None:
        if len(self.numbers) < self.after:
            return

        import optuna
        from optuna.storages import RetryHeartbeatStaleTrialCallback

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            retry = RetryHeartbeatStaleTrialCallback(max_retry=None)
            for t in optuna_study.get_trials(deepcopy=False):
                if t.number in self.numbers:
                    retry(optuna_study, t)
        why = "; ".join(f"{k} x{v}" for k, v in sorted(self.reasons.items(), key=lambda kv: -kv[1])[:3])
        raise JudgeUnreachable(redact(
            f"the judge {judge_identity} answered none of the last {len(self.numbers)} trials (every judgment "
            f"missing: {why or 'no reason given'}); the study stopped. Those trials are back in the queue and do not "
            "count toward the budget: fix the judge (is its server up? base_url, key) and run again"))
