#!/usr/bin/env bash
# The GPU check in one command, for the offline GPU machine (python3 3.12 with PyTorch; no registry):
# installs the prepared wheels (built beforehand by `python -m benchmarks.gpu_wheels` into the git-ignored
# .wheels/gpu-cpXY/) into a temporary folder with pip --no-index --no-deps, puts the repository and that
# folder on PYTHONPATH, and runs benchmarks/gpu_check.py, which writes OUT_DIR/gpu_check.json and
# OUT_DIR/gpu_check.log. Exit status: gpu_check's (1 when any check is not ok), 2 for a usage error.
#
#   bash benchmarks/gpu_check.sh OUT_DIR                          # on the GPU machine, < 8 minutes
#   bash benchmarks/gpu_check.sh OUT_DIR --device cpu --quick     # the CPU dry run (tests/test_gpu_check.py)
#
# PYTHON (default python3) and DIFFKIT_WHEELS (default .wheels/gpu-cpXY for that Python) override.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -lt 1 ]; then
    echo "usage: $0 OUT_DIR [gpu_check options]" >&2
    exit 2
fi
out=$1
shift
python=${PYTHON:-python3}
tag=$("$python" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')
wheels=${DIFFKIT_WHEELS:-.wheels/gpu-$tag}
if ! compgen -G "$wheels/*.whl" >/dev/null; then
    echo "no wheels in $wheels: build them where a registry is reachable with" >&2
    echo "  python -m benchmarks.gpu_wheels --python-version ${tag:2:1}.${tag:3}" >&2
    exit 2
fi
site=$(mktemp -d "${TMPDIR:-/tmp}/diffkit-wheels.XXXXXX")
trap 'rm -rf "$site"' EXIT
"$python" -m pip install --quiet --no-index --no-deps --no-compile --no-cache-dir \
    --disable-pip-version-check --target "$site" "$wheels"/*.whl
# The repository first (diffkit itself travels as source), then the wheels, then what was there.
export PYTHONPATH="$PWD:$site${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
"$python" -m benchmarks.gpu_check --out-dir "$out" --wheels-site "$site" "$@"
