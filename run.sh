#!/usr/bin/env bash
# One command on a fresh machine: install, start MLflow + Prefect (+ moto as the AWS control
# plane), serve the flows, run train-and-benchmark/local with a line per step, and end with its
# summary: model, a line per target, the recommendation and the deep links into both UIs.
# NISER_WORKERS=2 ./run.sh also starts a Prefect process work pool with 2 workers (HPO shards).
set -euo pipefail
cd "$(dirname "$0")"
bash scripts/setup.sh
. .venv/bin/activate
# a shell that sourced an earlier run's .state/env.sh points at the servers about to be replaced:
# forget those addresses (a server of your own, set by hand, is kept)
if [ -f .state/env.sh ]; then
  for var in MLFLOW_TRACKING_URI PREFECT_API_URL NISER_OPTUNA_STORAGE; do
    old=$(bash -c ". .state/env.sh >/dev/null 2>&1; printf %s \"\${$var:-}\"")
    if [ -n "$old" ] && [ "${!var:-}" = "$old" ]; then unset "$var"; fi
  done
fi
python scripts/services.py stop >/dev/null 2>&1 || true
python scripts/services.py start
. .state/env.sh
echo "running train-and-benchmark/local (NISER_RUN_PARAMS='--param epochs=5 ...' to change it)"
# shellcheck disable=SC2086  # NISER_RUN_PARAMS is a list of options
niser-mlops run train-and-benchmark/local --timeout 1500 ${NISER_RUN_PARAMS:-}
cat <<MSG

Services keep running. Use them from a shell with:  . .state/env.sh
Stop them with:                                      .venv/bin/python scripts/services.py stop
MSG
