#!/usr/bin/env bash
# NISER on a GPU machine, in-process and behind a real `mlflow models serve` (the GPU-endpoint
# analogue of the paper's ml.g4dn rows), with the same figures on that machine's CPU beside them.
#
#   scripts/gpu_serving.sh prepare   # here (project venv, ../shared/data): fills .gpuserve/ with
#                                    # wheels, the pyfunc model and the payloads
#   scripts/gpu_serving.sh           # on the GPU machine, from the repo root, with .gpuserve/
#                                    # copied beside the checkout; writes $OUT/gpu_serving.json,
#                                    # $OUT/gpu_serving.log and the servers' logs
#
# The GPU machine has Python 3.12 with torch, numpy and pandas but no mlflow and no network, so
# `prepare` downloads mlflow-skinny and what it needs that the machine lacks as cp312 manylinux
# wheels (versions pinned to this venv's); the run installs them into $SITE with --no-deps.
# Run mode reads: OUT (default ./gpu-serving-out), PYTHON (python3), SITE (/tmp/site),
# GPU_SERVING_TIMEOUT (420: seconds for everything) and GPU_SERVING_ARGS (extra or overriding
# arguments of `gpu_serving.py measure`, e.g. "--levels 1,2 --seconds 2").
set -euo pipefail
cd "$(dirname "$0")/.."

# Distributions the GPU image already holds (KINDS.md, "Python packages already there"): their
# wheels are dropped. Kept although the image has them: protobuf and typing_extensions (mlflow's
# and pydantic's floors on their versions) and anyio (mlflow-skinny excludes anyio 4.15.0).
GPU_HAS="annotated_doc certifi charset_normalizer click cloudpickle h11 idna packaging pyyaml
requests urllib3 zipp"
PLATFORMS="--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64
--platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64
--platform any"

if [[ "${1:-}" == "prepare" ]]; then
    py=.venv/bin/python
    constraints=$(mktemp)
    trap 'rm -f "$constraints"' EXIT
    "$py" -m pip freeze --exclude-editable | grep -v ' @ ' >"$constraints"
    rm -rf .gpuserve/whl && mkdir -p .gpuserve/whl
    # shellcheck disable=SC2086
    "$py" -m pip download -q --only-binary=:all: --python-version 3.12 --implementation cp \
        $PLATFORMS -c "$constraints" -d .gpuserve/whl "mlflow-skinny==3.17.2"
    for name in $GPU_HAS; do rm -f .gpuserve/whl/"$name"-*.whl; done
    "$py" scripts/gpu_serving.py prepare --out .gpuserve
    grep -qx '/.gpuserve/' .git/info/exclude 2>/dev/null || echo '/.gpuserve/' >>.git/info/exclude
    du -sh .gpuserve/whl .gpuserve/model; du -sh .gpuserve
    exit 0
fi

if [[ "${1:-}" != "--inner" ]]; then
    OUT=${OUT:-$PWD/gpu-serving-out}
    export OUT
    mkdir -p "$OUT"
    status=0
    timeout -k 15 "${GPU_SERVING_TIMEOUT:-420}" bash "$0" --inner 2>&1 | tee "$OUT/gpu_serving.log" \
        || status=$?
    case $status in
        0) note="every step succeeded" ;;
        124|137) note="the overall timeout of ${GPU_SERVING_TIMEOUT:-420} s struck" ;;
        *) note="a step failed: see the log and the errors in gpu_serving.json" ;;
    esac
    echo "gpu_serving.sh: exit status $status ($note)" | tee -a "$OUT/gpu_serving.log"
    exit "$status"
fi

PYTHON=${PYTHON:-python3}
SITE=${SITE:-/tmp/site}
for needed in .gpuserve/whl .gpuserve/model/MLmodel .gpuserve/model/artifacts/recommender/weights.pt \
    .gpuserve/payloads.json; do
    if [[ ! -e "$needed" ]]; then
        echo "missing $needed: run 'scripts/gpu_serving.sh prepare' here and carry .gpuserve" >&2
        exit 2
    fi
done
start=$SECONDS
"$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$SITE" .gpuserve/whl/*.whl
export PYTHONPATH="$SITE:$PWD" PATH="$SITE/bin:$PATH" PYTHONUNBUFFERED=1
echo "wheels installed into $SITE in $((SECONDS - start)) s; uvicorn: $(command -v uvicorn)"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
# shellcheck disable=SC2086
"$PYTHON" scripts/gpu_serving.py measure --model .gpuserve/model \
    --payloads .gpuserve/payloads.json --devices cuda,cpu --levels 1,2,4,8,16 --seconds 5 \
    --warmup 1 --out "$OUT/gpu_serving.json" --logs "$OUT" ${GPU_SERVING_ARGS:-}
