#!/usr/bin/env bash
# One command on a fresh machine: install, then lint, type-check and run the tests.
set -euo pipefail
cd "$(dirname "$0")"
bash scripts/setup.sh
. .venv/bin/activate
ruff check .
mypy niser deployers bench flows sessions scripts
pytest -q -ra "$@"
