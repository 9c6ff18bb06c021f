#!/usr/bin/env bash
# One command on a fresh machine: install, start MLflow + Prefect (+ moto as the AWS control
# plane), serve the flows, run train-and-benchmark/local and print the summary.
set -euo pipefail
cd "$(dirname "$0")"
bash scripts/setup.sh
. .venv/bin/activate
python scripts/services.py stop >/dev/null 2>&1 || true
python scripts/services.py start
. .state/env.sh
echo "running train-and-benchmark/local (watch it in the Prefect UI)"
prefect deployment run 'train-and-benchmark/local' --watch --watch-timeout 1500 \
  ${NISER_RUN_PARAMS:-}
python -m flows.cli compare --experiment niser --latest
cat <<MSG

MLflow UI:  ${MLFLOW_TRACKING_URI}   (experiment 'niser'; model 'niser', alias 'champion')
Prefect UI: ${PREFECT_API_URL%/api}
Services keep running. Use them from a shell with:  . .state/env.sh
Stop them with:                                      .venv/bin/python scripts/services.py stop
MSG
