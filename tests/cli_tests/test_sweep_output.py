"""`steeropt sweep` output: the prompt count it really used, every text (--show all, --out .jsonl/.csv), empty
generations flagged, tables that fit 80 and 120 columns without breaking words."""
from __future__ import annotations

import csv
import dataclasses
import io
import json

from rich.console import Console

from steeropt.cli import commands
from steeropt.cli.commands import elide, fit_table, print_sweep, write_sweep
from steeropt.engine.generation import Decoding
from steeropt.runner.sweep import sweep, sweep_units
from steeropt.specs.concepts import load_concept

from .conftest import steeropt


def _oneline(text: str) -> str:
    return " ".join(text.split())


def test_sweep_cli_counts_and_every_text(tmp_path):
    out = tmp_path / "sweep.jsonl"
    r = steeropt("sweep", "--concept", "astronomy", "--alphas", "0,0.5", "--prompts", "8", "--max-new-tokens", "8",
                 "--show", "all", "--out", out, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    text = _oneline(r.stdout)
    assert "6 prompts per α (asked for 8; the concept lists 6)" in text  # astronomy has 6 prompts
    recs = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(recs) == 6 * 3 and {x["alpha"] for x in recs} == {None, 0.0, 0.5}  # unsteered + 2 α
    assert set(recs[0]) >= {"prompt", "text", "empty", "keyword_hits", "rep_3", "distinct_1", "fluency_proxy", "broken"}
    for x in recs:  # --show all prints every text, whitespace aside
        assert (_oneline(x["text"]) or "(empty)") in text, x["text"]
    assert all(len(line) <= 80 for line in r.stdout.splitlines())


def test_sweep_rows_csv_and_empty_flag(embedded, tmp_path):
    c = load_concept("wedding")
    ticks = []
    s = sweep(embedded, c, [0.0, 0.3], layer=10, n_prompts=2, decoding=Decoding(max_new_tokens=6),
              progress=ticks.append)
    assert sum(ticks) == sweep_units(2, 2, 6)  # the bar ends full, however generation stopped
    assert len(ticks) >= 6  # and moved during generation, not once at the end
    assert [r.alpha for r in s.rows] == [0.0, 0.3] and len(s.baseline.samples) == 2
    path = tmp_path / "s.csv"
    write_sweep(path, s, c.name)
    rows = list(csv.DictReader(path.open()))
    assert len(rows) == 6 and rows[0]["alpha"] == "" and rows[2]["alpha"] == "0.0"

    # an empty generation is shown as "(empty)" and counted broken, never a blank cell
    x = s.rows[1].samples[0]
    s.rows[1].samples[0] = dataclasses.replace(x, text="  ", keyword_hits=0, rep_3=None, distinct_1=None,
                                               fluency_proxy=None, broken="empty")
    assert s.rows[1].empty == 1 and s.rows[1].broken_share >= 0.5
    buf = io.StringIO()
    old = commands.out
    commands.out = Console(file=buf, width=80)
    try:
        print_sweep(s, c, embedded, "first")
    finally:
        commands.out = old
    shown = buf.getvalue()
    assert "α=0.3 (empty)" in _oneline(shown) and all(len(line) <= 80 for line in shown.splitlines())


def test_fit_table_elides_in_the_middle_never_mid_word_wraps():
    url = "postgresql+psycopg2://steeropt:***@db.internal.example.org:5432/steeropt_production_database"
    for width in (80, 120):
        buf = io.StringIO()
        Console(file=buf, width=width).print(fit_table(["study", "storage"], [["ocean", url]], width=width))
        lines = buf.getvalue().splitlines()
        assert all(len(line) <= width for line in lines)
        cell = next(line for line in lines if "ocean" in line)
        assert "postgresql" in cell and "database" in cell  # head and tail kept, on one line
        assert ("…" in cell) == (len(url) + 20 > width)
    assert elide("sqlite:////tmp/a/very/long/folder/name/steeropt.db", 30) == "sqlite:////tmp/…/steeropt.db"
    assert elide("short", 30) == "short"


def _row(alpha, layer, hits, broken):
    from steeropt.runner.sweep import SweepRow, SweepSample

    return SweepRow(alpha, alpha, [SweepSample("p", "t", h, 0.0, 0.8, 0.9, "broken" if b else None)
                                   for h, b in zip(hits, broken)], layer)


def test_propose_picks_the_widest_window_and_straddles_it():
    from steeropt.runner.sweep import Sweep, propose

    alphas = [0.0, 0.1, 0.2, 0.3, 0.4]
    # layer 4: the concept shows at 0.2 (2/4 hits vs 0 unsteered) but the text breaks at 0.3
    # layer 8: shows at 0.1 and stays fine to 0.4 -> chosen; range from 0 (below onset) to one step past 0.4
    l4 = Sweep(4, "add", ["p"] * 4, _row(float("nan"), 4, [0] * 4, [0] * 4),
               [_row(a, 4, [1, 1, 0, 0] if a >= 0.2 else [0] * 4, [1] * 4 if a >= 0.3 else [0] * 4) for a in alphas])
    l8 = Sweep(8, "add", ["p"] * 4, _row(float("nan"), 8, [0] * 4, [0] * 4),
               [_row(a, 8, [1, 1, 1, 0] if a >= 0.1 else [0] * 4, [0] * 4) for a in alphas])
    p = propose([l4, l8])
    assert (p.layer, p.low, p.high, p.onset, p.last_fine) == (8, 0.0, 0.5, 0.1, 0.4)
    assert p.reasons[0].startswith("layer 4:") and "breaks at α=0.3" in p.reasons[0]
    assert "none broke" in p.reasons[-1]
    # nothing shows anywhere: say so, and still give a searchable range
    flat = Sweep(8, "add", ["p"] * 4, _row(float("nan"), 8, [0] * 4, [0] * 4),
                 [_row(a, 8, [0] * 4, [1] * 4 if a >= 0.2 else [0] * 4) for a in alphas])
    p = propose([flat])
    assert p.onset is None and (p.low, p.high) == (0.0, 0.2) and "check the keywords" in p.reasons[-1]
