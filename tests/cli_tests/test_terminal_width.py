"""The CLI in a real terminal at 80 and 120 columns (tmux, read back with `capture-pane`): every --help, `list`,
`validate` and `status` of a real study fit the width, no option name or default is cut with "…", and off a
terminal (a log) `run` prints whole lines without library progress bars or INFO lines."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

TMUX = shutil.which("tmux")
pytestmark = pytest.mark.skipif(TMUX is None, reason="tmux is not installed (scripts/test.sh installs it)")
ROOT = Path(__file__).resolve().parents[2]
STEEROPT = str(Path(sys.executable).with_name("steeropt"))
HELP = [[], ["sweep"], ["new"], ["new", "concept"], ["new", "study"], ["validate"], ["run"], ["worker"],
        ["status"], ["pick"], ["generate"], ["compare"], ["plan"], ["parity"], ["serve"], ["review"], ["judge"],
        ["judge", "check"], ["judge", "calibrate"], ["judge", "export"], ["list"]]
WORKFLOW = ["sweep", "new", "validate", "run", "worker", "status", "pick", "generate", "compare"]


class Pane:
    """A detached tmux session of a given width on a private server; `run` types a command and returns the
    screen's text with the terminal's own wraps joined (-J), so a line longer than the width shows as one."""

    def __init__(self, width: int, cwd: Path):
        self.width, self.sock = width, f"steeropt-test-{uuid.uuid4().hex[:8]}"
        env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES", "TMUX")}
        env |= {"STEEROPT_NUM_THREADS": "1", "TERM": "xterm-256color"}
        subprocess.run([TMUX, "-L", self.sock, "-f", "/dev/null", "new-session", "-d", "-s", "t", "-x", str(width),
                        "-y", "60", "-c", str(cwd)], env=env, check=True)
        subprocess.run([TMUX, "-L", self.sock, "set-option", "-g", "history-limit", "5000"], check=True)

    def run(self, args: list[str], timeout: float = 60.0) -> str:
        tag = uuid.uuid4().hex[:6]
        start, done = f"__start_{tag}__", f"__done_{tag}__"
        cmd = f"clear; echo {start}; " + " ".join([STEEROPT, *args]) + f"; echo {done}"
        subprocess.run([TMUX, "-L", self.sock, "send-keys", "-t", "t", cmd, "Enter"], check=True)
        end = time.time() + timeout
        while time.time() < end:
            text = subprocess.run([TMUX, "-L", self.sock, "capture-pane", "-p", "-J", "-t", "t", "-S", "-", "-E", "-"],
                                  capture_output=True, text=True, check=True).stdout
            lines = [ln.rstrip() for ln in text.splitlines()]
            if done in lines:  # the echo's own output lines, not the typed command line
                return "\n".join(lines[lines.index(start) + 1:lines.index(done)])
            time.sleep(0.2)
        raise AssertionError(f"{args} did not finish in {timeout} s in tmux")

    def close(self):
        subprocess.run([TMUX, "-L", self.sock, "kill-server"], capture_output=True)


def problems(text: str, width: int) -> list[str]:
    """Lines over the width, and option names or defaults cut with an ellipsis."""
    bad = [f"{len(ln)} > {width}: {ln}" for ln in text.splitlines() if len(ln.rstrip()) > width]
    bad += [f"cut: {m}" for m in re.findall(r"--[\w-]*…|…\]|sqlite:///[\w.]*…", text)]
    return bad


@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory):
    """A real study of 2 trials on the embedded model, run off a terminal (its log is checked below)."""
    d = tmp_path_factory.mktemp("tiny")
    env = {**os.environ, "STEEROPT_NUM_THREADS": "1"}
    subprocess.run([STEEROPT, "new", "study", "tiny", "--concept", "wedding", "--trials", "2", "--batch-size", "2",
                    "--prompts-per-trial", "3", "--max-new-tokens", "8"], cwd=d, env=env, check=True,
                   capture_output=True)
    r = subprocess.run([STEEROPT, "run", "tiny", "--no-track"], cwd=d, env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return d, r


@pytest.mark.parametrize("width", [80, 120])
def test_cli_fits_the_terminal(width, tiny_study):
    d, _ = tiny_study
    pane = Pane(width, ROOT)
    try:
        bad = []
        wide = width > 80  # at 120 columns a few pages suffice: what fits 80 columns is wrapped, not cut, at 120
        for args in HELP if not wide else [[], ["new", "study"], ["pick"]]:
            text = pane.run([*args, "--help"])
            assert "Usage: steeropt" in text, (args, text)
            bad += [f"{' '.join(args)} --help: {p}" for p in problems(text, width)]
            if args == []:  # commands listed in the order they are used
                listed = [m.group(1) for ln in text.split("Commands:")[1].splitlines()
                          if (m := re.match(r"  ([a-z]+)  ", ln))]
                assert listed[:len(WORKFLOW)] == WORKFLOW, listed
            elif args not in (["new"], ["judge"]):
                assert "Example:" in text, args
        for args in (["list"], ["list", "concept"], ["validate", "quickstart"])[:1 if wide else 3]:
            text = pane.run(args)
            assert "error" not in text.lower(), text
            bad += [f"{' '.join(args)}: {p}" for p in problems(text, width)]
        pane.close()
        pane = Pane(width, d)
        text = pane.run(["status", "tiny"])
        for words in ("constraints", "infeasible", "re-evaluation", "hypervolume", "next:"):
            assert words in text, (words, text)
        assert "alpha_l" not in text  # the parameter's display name, not its storage name
        bad += [f"status: {p}" for p in problems(text, width)]
    finally:
        pane.close()
    assert not bad, "\n".join(bad)


def test_generate_help_names_its_default():
    out = subprocess.run([STEEROPT, "generate", "--help"], capture_output=True, text=True, check=True).stdout
    block = " ".join(out.split("--max-new-tokens", 1)[1].split("--unsteered")[0].split())
    assert "new tokens per answer" in block and "default: (the profile's" in block


def test_run_off_a_terminal_logs_whole_lines_without_library_noise(tiny_study):
    _, r = tiny_study
    log = r.stdout + r.stderr
    for noise in ("Loading weights", "it/s]", "INFO", "[I 20", "de-quantizing"):
        assert noise not in log, (noise, log)
    lines = r.stderr.splitlines()
    assert any(re.search(r"tiny trials 2/2 \| judge calls \d+ \| front \d+ \| HV [\d.]+ \| elapsed", ln) for ln in lines)
    # the artifacts line is longer than 80 columns and stays one line in a log
    art = [ln for ln in r.stdout.splitlines() if ln.startswith("artifacts: ")]
    assert art and len(art[0]) > 80 and "timing.json" in art[0]
