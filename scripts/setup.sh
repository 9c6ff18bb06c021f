#!/usr/bin/env bash
# Create .venv and install everything the project needs (idempotent; safe to re-run).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
EXTRAS=${NISER_EXTRAS:-test,standins,load,litserve}
if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
if ! [ -x /usr/sbin/nginx ] && ! command -v nginx >/dev/null 2>&1; then
  echo "installing nginx-light (load balancer of the local deployer, SageMaker data plane)"
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq nginx-light curl >/dev/null
fi
# the browser test drives Debian's chromium through Playwright (which cannot fetch its own
# browsers here); without it that test skips, so a failed install does not stop the setup
if [[ ",$EXTRAS," == *",test,"* ]] && ! command -v chromium >/dev/null 2>&1; then
  echo "installing chromium (headless browser of the UI test)"
  { $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null; } \
    || echo "chromium could not be installed: tests/flows/test_browser.py will skip"
fi
# the session server's Redis store is tested against Debian's redis-server; without it those
# tests skip, so a failed install does not stop the setup
if [[ ",$EXTRAS," == *",test,"* ]] && ! command -v redis-server >/dev/null 2>&1; then
  echo "installing redis-server (the session server's Redis store, in the tests)"
  { $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq redis-server >/dev/null; } \
    || echo "redis-server could not be installed: the Redis store tests will skip"
fi
# MLflow's PostgreSQL backend (`scripts/services.py start --backend postgres`) runs Debian's
# postgresql; without it that backend refuses to start and its test skips, so a failed install
# does not stop the setup
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  echo "installing postgresql (MLflow's PostgreSQL backend)"
  { $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq postgresql >/dev/null; } \
    || echo "postgresql could not be installed: --backend postgres and its test are unavailable"
fi
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
. .venv/bin/activate
python -m pip install -q --upgrade pip
# torch first and pinned: an unpinned torch pulls a multi-GB CUDA build
python -m pip install -q torch==2.13.0
# the local AWS stand-ins (moto, awslambdaric) come as the "standins" extra: the demo and the
# tests use them; "load" is Locust (the second load generator); NISER_EXTRAS overrides (e.g.
# NISER_EXTRAS=aws for a real account only)
python -m pip install -q -e ".[${EXTRAS}]"
python -m pip check >/dev/null || { python -m pip check; exit 1; }
echo "setup done: $(python -c 'import torch, mlflow, prefect; print("torch", torch.__version__, "mlflow", mlflow.__version__, "prefect", prefect.__version__)')"
