"""The phase clock behind runs/<study>/timing.json and the speed benchmark's wall-time split."""
from __future__ import annotations

import threading
import time

from steeropt.evaluation.objectives import ObjectiveSpec, ObjectiveStack
from steeropt.specs import build
from steeropt.timing import PhaseClock


def test_nested_phases_count_exclusive_time():
    clock = PhaseClock()
    with clock.phase("setup"):
        time.sleep(0.05)
        with clock.phase("model_load"):
            time.sleep(0.1)
        time.sleep(0.05)
    snap = clock.snapshot()
    # sleeps are lower bounds; the machine may add to them, never take away (tolerance 0.04 s for the rest)
    assert 0.1 <= snap["phases"]["setup"]["seconds"] < 0.1 + 0.09  # the load inside is not counted twice
    assert 0.1 <= snap["phases"]["model_load"]["seconds"] < 0.1 + 0.09
    assert snap["phases"]["setup"]["calls"] == 1 and snap["since_import_s"] >= 0.2


def test_other_threads_do_not_touch_the_clock():
    clock = PhaseClock()
    t = threading.Thread(target=lambda: clock.phase("generation").__enter__())
    t.start()
    t.join()
    assert clock.snapshot()["phases"] == {}


def test_preference_pass_runs_only_when_the_objective_reads_it(embedded):
    quick = build("objective", "quickstart")
    assert ObjectiveStack(quick, embedded).tier1.preference is False
    forced = ObjectiveSpec.model_validate({**quick.model_dump(), "tier1": {**quick.tier1.model_dump(), "preference": True}})
    assert ObjectiveStack(forced, embedded).tier1.preference is True
    uses = ObjectiveSpec.model_validate({**quick.model_dump(), "scores": {**quick.model_dump()["scores"],
                                                                             "utility": {"metric": "utility"}},
                                         "objectives": [{"name": "utility", "direction": "maximize"}]})
    assert ObjectiveStack(uses, embedded).tier1.preference is True
