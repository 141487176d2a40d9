#!/usr/bin/env bash
# Builds the abi3 wheel once and runs the Python tests with it installed, each time in an
# environment of its own, with the test dependencies pyproject.toml names:
# - on this Python, with the oldest NumPy and torch that pyproject.toml accepts (the
#   oldest with wheels for this Python);
# - on the oldest and the newest CPython 3 that pyenv has, where pyenv is installed (the
#   one wheel must work on every CPython from 3.9), without torch.
set -euo pipefail
cd "$(dirname "$0")/.."

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
python -m pip wheel --quiet --disable-pip-version-check --no-deps . -w "$work/wheel"
wheel="$(ls "$work"/wheel/fastload-*.whl)"

pytest_args=("$@")

# Runs the tests in a new environment `$1` of `python` ($2) holding the wheel and $3...
run_in() {
    local env="$work/$1" python="$2"
    shift 2
    "$python" -m venv "$env"
    "$env/bin/python" -m pip install --quiet --disable-pip-version-check "$@"
    "$env/bin/python" -X dev -m pytest -q -p no:cacheprovider "${pytest_args[@]}"
}

oldest_pins="$(python -c 'import sys; print({11: "numpy==1.23.5 torch==2.1.2", 12: "numpy==1.26.0 torch==2.2.0"}.get(sys.version_info[1], ""))')"
if [ -n "$oldest_pins" ]; then
    echo "wheel_environments.sh: $oldest_pins"
    # shellcheck disable=SC2086
    run_in oldest python "$wheel[test,torch]" $oldest_pins
fi

if ! command -v pyenv >/dev/null; then
    echo "wheel_environments.sh: no pyenv, so the wheel is tested on this Python only"
    exit 0
fi
versions="$(pyenv versions --bare | grep -E '^3\.(9|[1-9][0-9])\.[0-9]+$' | sort -V || true)"
for version in $(echo "$versions" | head -n 1) $(echo "$versions" | tail -n 1); do
    echo "wheel_environments.sh: CPython $version"
    run_in "$version" "$(PYENV_VERSION="$version" pyenv which python)" "$wheel[test]"
done
