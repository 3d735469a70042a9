"""The trial budget of a study, shared by every process on its storage: which trials count, how many are left,
and which freshly asked candidates fall outside it.

One count serves the budget, `steeropt status` and the progress bar: RUNNING and finished trials count,
except a FAIL trial that was re-queued (failed as stale, then retried with the same params by
optuna.storages.RetryHeartbeatStaleTrialCallback): its retry counts in its place.
"""
from __future__ import annotations

import datetime as _dt
import time
from dataclasses import dataclass, field

from optuna.trial import FrozenTrial, TrialState


def counted(trials: list[FrozenTrial]) -> list[FrozenTrial]:
    """The trials the budget counts, in budget order (start time, then number)."""
    requeued = _requeued(trials)
    keep = [t for t in trials if t.state == TrialState.RUNNING
            or (t.state in (TrialState.COMPLETE, TrialState.FAIL) and t.number not in requeued)]
    return sorted(keep, key=lambda t: (t.datetime_start or _dt.datetime.max, t.number))


def _requeued(trials: list[FrozenTrial]) -> set[int]:
    return {n for t in trials for n in (t.system_attrs.get("retry_history") or [])}


@dataclass(frozen=True)
class Count:
    done: int      # finished trials that count (COMPLETE, and FAIL not re-queued)
    running: int   # RUNNING trials (they count too: the budget reserves their slot)
    requeued: int  # FAIL trials retried as another trial: not counted

    @property
    def used(self) -> int:
        return self.done + self.running


def count(trials: list[FrozenTrial]) -> Count:
    """The budget's view of a study's trials (also what `status` and the progress bar show)."""
    c = counted(trials)
    running = sum(t.state == TrialState.RUNNING for t in c)
    requeued = sum(t.state == TrialState.FAIL for t in trials if t.number in _requeued(trials))
    return Count(done=len(c) - running, running=running, requeued=requeued)


class Ledger:
    """The budget of one optimizer's study: `budget` trials across every process on the storage."""

    def __init__(self, optimizer, budget: int):
        self.optimizer, self.budget = optimizer, int(budget)

    def trials(self) -> list[FrozenTrial]:
        return self.optimizer.study.get_trials(deepcopy=False)

    def count(self) -> Count:
        return count(self.trials())

    def left(self) -> int:
        return self.budget - self.count().used

    def keep(self, cands: list) -> list:
        """The candidates inside the budget; the others are given back untouched (WAITING, same params;
        the next ask hands them out). Called right after ask and again before tell: two processes that
        asked for the last slot at once both see the trials of the other one, and the later trial yields."""
        inside = {t.number for t in counted(self.trials())[:self.budget] if t.state == TrialState.RUNNING}
        for c in cands:
            if c.number not in inside:
                self.optimizer.give_back(c.number)
        return [c for c in cands if c.number in inside]


@dataclass
class StudyProgress:
    """What the progress display shows; updated after every batch."""

    done: int = 0
    target: int = 0
    judge_calls: int = 0
    front_size: int = 0
    hypervolume: float = 0.0
    started: float = field(default_factory=time.time)
    phase: str = "trials"  # "trials", then "re-evaluation" (runner.reeval) when the spec budgets one
    reeval_done: int = 0  # steered re-evaluation samples generated and scored
    reeval_target: int = 0  # the most the re-evaluation budget may spend
    last: dict = field(default_factory=dict)
