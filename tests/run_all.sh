#!/usr/bin/env bash
# The whole test suite: installs fastload with its test dependencies (PyTorch included, for
# the torch tests), then runs the Rust core's tests, the linters and the Python tests.
set -euo pipefail
cd "$(dirname "$0")/.."

python -m pip install --quiet --disable-pip-version-check -e ".[test,torch]"
cargo test --quiet
cargo fmt --check
ruff check python tests benches
python -X dev -X faulthandler -m pytest -q "$@"

# The Python tests again against a debug build of the core, which checks Rust's unsafe
# preconditions and the core's own debug assertions. The depth test is left out: debug
# frames are larger, so a debug build refuses a shallower tree.
cargo build --quiet --features python
debug="$(mktemp -d)"
oldest="$(mktemp -d)"
trap 'rm -rf "$debug" "$oldest"' EXIT
cp -r python/fastload "$debug/fastload"
cp target/debug/lib_fastload.so "$debug/fastload/_fastload.abi3.so"
PYTHONPATH="$debug" python -X dev -X faulthandler -m pytest -q -p no:cacheprovider \
    --deselect tests/test_bad_input.py::test_nesting_deeper_than_the_recursion_limit_works "$@"

# The Python tests again with the oldest NumPy and torch that pyproject.toml accepts (the
# oldest with wheels for this Python), in an environment of their own.
oldest_pins="$(python -c 'import sys; print({11: "numpy==1.23.5 torch==2.1.2", 12: "numpy==1.26.0 torch==2.2.0"}.get(sys.version_info[1], ""))')"
if [ -n "$oldest_pins" ]; then
    python -m venv "$oldest/env"
    # shellcheck disable=SC2086
    "$oldest/env/bin/python" -m pip install --quiet --disable-pip-version-check \
        $oldest_pins "ml_dtypes<0.5" pytest hypothesis safetensors
    PYTHONPATH="$PWD/python" "$oldest/env/bin/python" -X dev -m pytest -q -p no:cacheprovider "$@"
fi

# The abi3 wheel itself, on the oldest and the newest CPython at hand.
bash tests/wheel_pythons.sh "$@"
