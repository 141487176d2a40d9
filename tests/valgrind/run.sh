#!/usr/bin/env bash
# Memory checks under valgrind (memcheck): the Rust core's tests, then a threaded Python
# load (tests/valgrind/threaded_load.py). Fails on any error memcheck reports in the Rust
# tests, and on any error in the Python run whose stack passes through fastload or that
# reads or writes invalid memory. (CPython 3.11's int objects trip memcheck's
# uninitialised-value check on their own, and the dynamic loader's word-wise strncmp
# reads past short strings while loading libraries; neither involves fastload.)
set -euo pipefail
cd "$(dirname "$0")/../.."
command -v valgrind >/dev/null || { echo "valgrind is not installed"; exit 1; }
log=$(mktemp -d)

binary=$(cargo test --no-run --message-format=json 2>/dev/null \
  | python -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["kind"] == ["cdylib", "rlib"] and m.get("executable"):
        print(m["executable"])')
echo "memcheck: Rust core tests ($binary)"
# The one timing-based test is skipped: valgrind runs threads one at a time.
valgrind --tool=memcheck --error-exitcode=1 --leak-check=full \
  --errors-for-leak-kinds=definite -q "$binary" --test-threads=1 \
  --skip a_watch_error_stops_the_copy 2>&1 | tee "$log/rust.log" | tail -3

python=$(python -c 'import sys; print(sys.executable)')
python=$(readlink -f "$python")
echo "memcheck: threaded Python load ($python)"
PYTHONMALLOC=malloc valgrind --tool=memcheck --num-callers=40 "$python" \
  tests/valgrind/threaded_load.py >"$log/python.log" 2>&1
grep -q '^OK$' "$log/python.log" || { cat "$log/python.log"; exit 1; }
python - "$log/python.log" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
blocks = re.split(r"\n==\d+== \n", text)
errors = [b for b in blocks if re.search(r"== (Invalid|Conditional|Use of|Syscall|Mismatched)", b)]
invalid = [b for b in errors if re.search(r"== Invalid (read|write|free)", b)]
ours = [b for b in errors if "_fastload" in b]
ours += [b for b in invalid if "_fastload" not in b and "dl-load.c" not in b]
print(f"{len(errors)} reports in all, {len(ours)} involving fastload or invalid memory")
for b in ours[:5]:
    print(b)
sys.exit(1 if ours else 0)
PY
