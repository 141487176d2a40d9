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
