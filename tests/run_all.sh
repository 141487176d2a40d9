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

# The Python tests again with NumPy 1.x, the oldest release pyproject.toml accepts that
# has a wheel for this Python, in an environment of its own (without torch).
numpy_1="$(python -c 'import sys; print({11: "1.23.5", 12: "1.26.0"}.get(sys.version_info[1], ""))')"
if [ -n "$numpy_1" ]; then
    python -m venv "$oldest/env"
    "$oldest/env/bin/python" -m pip install --quiet --disable-pip-version-check \
        "numpy==$numpy_1" "ml_dtypes<0.5" pytest hypothesis safetensors
    PYTHONPATH="$PWD/python" "$oldest/env/bin/python" -X dev -m pytest -q -p no:cacheprovider "$@"
fi
