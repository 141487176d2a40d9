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
trap 'rm -rf "$debug"' EXIT
cp -r python/fastload "$debug/fastload"
cp target/debug/lib_fastload.so "$debug/fastload/_fastload.abi3.so"
PYTHONPATH="$debug" python -X dev -X faulthandler -m pytest -q -p no:cacheprovider \
    --deselect tests/test_bad_input.py::test_nesting_deeper_than_the_recursion_limit_works "$@"

# The built wheel, installed on the oldest NumPy and torch accepted and on the oldest and
# newest CPython at hand.
bash tests/wheel_environments.sh "$@"
