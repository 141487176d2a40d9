#!/usr/bin/env bash
# Builds the abi3 wheel and runs the Python tests (without torch) with it installed on the
# oldest and the newest CPython 3 that pyenv has, where pyenv is installed: the one wheel
# must work on every CPython from 3.9.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v pyenv >/dev/null; then
    echo "wheel_pythons.sh: no pyenv, so the wheel is tested on this Python only"
    exit 0
fi
versions="$(pyenv versions --bare | grep -E '^3\.(9|[1-9][0-9])\.[0-9]+$' | sort -V || true)"
if [ -z "$versions" ]; then
    echo "wheel_pythons.sh: pyenv has no CPython 3.9 or newer"
    exit 0
fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
python -m pip wheel --quiet --disable-pip-version-check --no-deps . -w "$work/wheel"
for version in $(echo "$versions" | head -n 1) $(echo "$versions" | tail -n 1); do
    echo "wheel_pythons.sh: CPython $version"
    "$(PYENV_VERSION="$version" pyenv which python)" -m venv "$work/$version"
    "$work/$version/bin/python" -m pip install --quiet --disable-pip-version-check \
        "$work"/wheel/fastload-*.whl pytest hypothesis ml_dtypes safetensors
    "$work/$version/bin/python" -X dev -m pytest -q -p no:cacheprovider "$@"
done
