#!/usr/bin/env bash
# The test suite on real parts: set up .venv with the test extras (incl. the llama.cpp judge server)
# and PostgreSQL for the distributed tests, then run pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh test
if ! command -v initdb >/dev/null && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "[test] installing PostgreSQL from Debian packages" >&2
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null) || \
      echo "[test] PostgreSQL could not be installed; the distributed tests will say so" >&2
  fi
fi
if ! command -v tmux >/dev/null; then  # the 80/120-column CLI checks drive a real terminal through tmux
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "[test] installing tmux from Debian packages" >&2
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq tmux >/dev/null) || \
      echo "[test] tmux could not be installed; the terminal-width tests will say so" >&2
  fi
fi
export STEEROPT_CACHE_DIR="${STEEROPT_CACHE_DIR:-$HOME/.cache/steeropt}"
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
