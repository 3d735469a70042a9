#!/usr/bin/env bash
# The main job on the embedded default: set up .venv, then run the quickstart study offline.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
if [ -f studies/quickstart.yaml ] && .venv/bin/steeropt --help | grep -q " run "; then
  .venv/bin/steeropt run studies/quickstart.yaml "$@"
  echo "Results: run '.venv/bin/mlflow ui --backend-store-uri sqlite:///mlflow.db' and open the runs link printed above" \
       "(http://127.0.0.1:5000/#/experiments/<id>/runs?workflowType=machine_learning)" >&2
else
  .venv/bin/steeropt sweep "$@"
fi
