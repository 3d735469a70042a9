"""How many CPU threads torch uses inside one process (model, local judge, optimizers).

Default: min(2, cores). torch's own default is every core, and every steeropt worker, judge server and
test process on a small shared machine then fights for the same cores: on the 2-core reference machine
oversubscribed runs were measured 4-5x slower. Two threads is what one process on such a machine can
use; past that a CPU forward of the 135M model gains little. Set `STEEROPT_NUM_THREADS` (or
`steeropt --threads N`) to 1 when several processes share the cores, higher on a big machine.
Each process reads its own setting (workers are separate processes).
"""
from __future__ import annotations

import os

import torch

from steeropt.errors import SteeroptError

ENV = "STEEROPT_NUM_THREADS"


def default_threads() -> int:
    return max(1, min(2, os.cpu_count() or 1))


def configure_threads(n: int | str | None = None) -> int:
    """Set torch's intra-op threads to `n`, else $STEEROPT_NUM_THREADS, else `default_threads()`.
    Returns the number set. A bad value raises SteeroptError naming where it came from."""
    where = "--threads" if n is not None else ENV
    raw = n if n is not None else os.environ.get(ENV, "").strip() or None
    if raw is None:
        threads = default_threads()
    else:
        try:
            threads = int(raw)
        except (TypeError, ValueError):
            raise SteeroptError(f"{where} must be a whole number of threads >= 1, got {raw!r}") from None
        if threads < 1:
            raise SteeroptError(f"{where} must be a whole number of threads >= 1, got {raw!r}")
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return threads
