"""Where a process's wall time goes: one clock of named phases (model load, generation, cheap tier, judge, ...).

Phases nest and the time is exclusive: a model load inside the study set-up counts as model load only.
The study writes the clock into runs/<study>/summary.json ("timing"); bench/speed.py reads it to split the
quickstart's wall time. Anything outside a phase (trial bookkeeping, MLflow, plots) is the remainder.
"""
from __future__ import annotations

import threading
import time
from collections import defaultdict
from contextlib import contextmanager


class PhaseClock:
    def __init__(self):
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self._stack: list[list] = []  # [name, start of its current uninterrupted stretch]
        self._owner = threading.get_ident()
        self.started, self.first_phase = time.perf_counter(), None  # started: when steeropt.timing was imported

    @contextmanager
    def phase(self, name: str):
        if threading.get_ident() != self._owner:  # server threads: not part of a study's wall time
            yield
            return
        now = time.perf_counter()
        if self.first_phase is None:
            self.first_phase = now
        if self._stack:  # pause the enclosing phase
            parent = self._stack[-1]
            self.seconds[parent[0]] += now - parent[1]
        self._stack.append([name, now])
        try:
            yield
        finally:
            now = time.perf_counter()
            self.seconds[name] += now - self._stack.pop()[1]
            self.calls[name] += 1
            if self._stack:
                self._stack[-1][1] = now

    def snapshot(self) -> dict:
        """Seconds and calls per phase, the seconds since import and from import to the first phase."""
        now = time.perf_counter()
        return {"phases": {name: {"seconds": round(self.seconds[name], 3), "calls": self.calls[name]}
                           for name in self.seconds},
                "since_import_s": round(now - self.started, 3),
                "first_phase_at_s": round((self.first_phase or now) - self.started, 3)}


CLOCK = PhaseClock()
phase = CLOCK.phase
