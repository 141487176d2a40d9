"""fastload's benchmark runner: every scenario against its baselines, in one run.

    python benches/run.py            # full run
    python benches/run.py --quick    # smaller data, fewer repeats: under a minute
    python benches/run.py --json out.json --only gpt2 tiny

Scenarios: gpt2, tiny, huge, medium, cast, state, file, and (with torch installed) torch
(GPT-2 as an ``nn.Module``) and modules (20,000 small modules).

Every figure is a median over repeats. Ratios compare timings taken in this run on the
same data. ``limit`` is the memory-bandwidth limit: the best of 1..N threads running
``np.copyto`` on disjoint slices of one large buffer, counted in bytes written (for a cast,
in bytes moved, read + write, against twice that rate).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path
from typing import Any, Dict, List

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import baselines  # noqa: E402
import scenarios  # noqa: E402

import fastload  # noqa: E402
from fastload.demo import arrays_of as leaves_of  # noqa: E402


def peak_extra_rss(fn) -> int:
    """Peak resident memory added while ``fn`` runs, in bytes (Linux; 0 elsewhere)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset the peak to the current resident size
    except OSError:
        return 0

    def read(field):
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field):
                    return int(line.split()[1]) * 1024
        return 0

    before = read("VmRSS:")
    fn()
    return max(0, read("VmHWM:") - before)


class Runner:
    def __init__(self, quick: bool) -> None:
        self.quick = quick
        self.repeats = 3 if quick else 7
        self.rows: List[Dict[str, Any]] = []
        nbytes = (256 if quick else 1024) << 20
        self.limit = baselines.copy_bandwidth(nbytes, self.repeats)
        print(
            f"memory-bandwidth limit: {self.limit['bytes_per_s'] / 1e9:.2f} GB/s written "
            f"(np.copyto, best with {self.limit['threads']} threads)",
            flush=True,
        )

    def time(self, fn) -> float:
        return baselines.median_time(fn, self.repeats)

    def record(
        self,
        name: str,
        seconds: float,
        *,
        written: int,
        moved: int = 0,
        leaves: int = 0,
        others: Dict[str, float] = None,
        extra: Dict = None,
    ) -> None:
        moved = moved or 2 * written
        limit_seconds = moved / (2 * self.limit["bytes_per_s"])
        row = {
            "scenario": name,
            "fastload_ms": seconds * 1e3,
            "bytes_written": written,
            "bytes_moved": moved,
            "GBps_written": written / seconds / 1e9,
            "vs_limit": limit_seconds / seconds,
            "leaves": leaves,
            "ns_per_leaf": seconds / leaves * 1e9 if leaves else None,
            "baselines_ms": {k: v * 1e3 for k, v in (others or {}).items()},
            "speedup": {k: v / seconds for k, v in (others or {}).items()},
        }
        row.update(extra or {})
        self.rows.append(row)
        speedups = ", ".join(f"{k} {v / seconds:.1f}x" for k, v in (others or {}).items())
        # Per-leaf cost only says something for trees of many small leaves.
        per_leaf = f", {row['ns_per_leaf']:.0f} ns/leaf" if leaves >= 10_000 else ""
        print(
            f"{name:<14} {seconds * 1e3:9.2f} ms  {row['GBps_written']:6.2f} GB/s  "
            f"{row['vs_limit']:5.2f}x limit{per_leaf}  [{speedups}]",
            flush=True,
        )

    def load(self, name, dst, src, *, walk=True, tree_map=True, moved=0, extra=None):
        dst_leaves = leaves_of(dst)
        written, count = sum(a.nbytes for a in dst_leaves), len(dst_leaves)
        # Timed while the tree alone holds its arrays, as a model's tree does: an array
        # referenced from elsewhere too costs its leaf a lookup for ties (see README).
        del dst_leaves
        others = {}
        fast = self.time(lambda: fastload.loadmodel(dst, src))
        dst_leaves, src_leaves = leaves_of(dst), leaves_of(src)
        if walk:
            others["python walk"] = self.time(lambda: baselines.python_walk(dst, src))
        run_optree = baselines.optree_copy(fastload.state(dst), fastload.state(src))
        if tree_map and run_optree:
            others["optree"] = self.time(run_optree)
        run_torch = baselines.torch_copy(dst_leaves, src_leaves)
        if run_torch:
            others["torch copy_"] = self.time(run_torch)
        memory = peak_extra_rss(lambda: fastload.loadmodel(dst, src))
        extra = dict(extra or {}, peak_extra_bytes=memory)
        self.record(
            name,
            fast,
            written=written,
            moved=moved,
            leaves=count,
            others=others,
            extra=extra,
        )


SCENARIOS = ("gpt2", "tiny", "huge", "medium", "cast", "state", "torch", "modules", "file")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small data, few repeats")
    parser.add_argument("--json", default="benches/results.json", help="where to write JSON")
    parser.add_argument("--only", nargs="*", help="scenario names to run")
    args = parser.parse_args(argv)
    wanted = set(args.only or SCENARIOS)
    run = Runner(args.quick)
    scale = 2 if args.quick else 1

    if "gpt2" in wanted:
        run.load(
            "gpt2",
            scenarios.gpt2(seed=0, fill=False, scale=scale),
            scenarios.gpt2(seed=1, scale=scale),
        )
    if "tiny" in wanted:
        n = 20_000 if args.quick else 100_000
        for label, mixed in (("tiny", False), ("tiny mixed", True)):
            dst = scenarios.tiny(n, seed=0, mixed=mixed)
            run.load(label, dst, fastload.state(scenarios.tiny(n, seed=1, mixed=mixed)))
            del dst
    if "huge" in wanted:
        size = (64 if args.quick else 256) << 20
        run.load("huge", scenarios.arrays(4, size, fill=False), scenarios.arrays(4, size, 1))
    if "medium" in wanted:
        count = 5_000 if args.quick else 20_000
        run.load(
            "medium",
            scenarios.arrays(count, 64 << 10, fill=False),
            scenarios.arrays(count, 64 << 10, 1),
        )
    if "cast" in wanted:
        import ml_dtypes

        src32 = scenarios.gpt2(seed=1, scale=scale)
        for label, dtype in (("f32->f16", np.float16), ("f32->bf16", ml_dtypes.bfloat16)):
            dst = scenarios.gpt2(dtype, fill=False, scale=scale)
            fastload.loadmodel(dst, src32)
            exact = all(
                np.array_equal(d.view(np.uint16), s.astype(dtype).view(np.uint16))
                for d, s in zip(leaves_of(dst), leaves_of(src32))
            )
            n = sum(a.size for a in leaves_of(dst))
            run.load(
                f"cast {label}",
                dst,
                src32,
                moved=n * 6,
                tree_map=False,
                extra={"bit_identical": exact},
            )
        src64 = scenarios.gpt2(np.float64, seed=1, scale=scale)
        dst32 = scenarios.gpt2(fill=False, scale=scale)
        n = sum(a.size for a in leaves_of(dst32))
        run.load("cast f64->f32", dst32, src64, moved=n * 12, tree_map=False)
        del src32, src64, dst32
    if "state" in wanted:
        for label, tree in (
            ("state gpt2", scenarios.gpt2(fill=False, scale=scale)),
            ("state tiny", scenarios.tiny(20_000 if args.quick else 100_000)),
            ("state tiny mixed", scenarios.tiny(20_000 if args.quick else 100_000, mixed=True)),
        ):
            n = len(leaves_of(tree))
            run.record(
                label,
                run.time(lambda tree=tree: fastload.state(tree)),
                written=0,
                moved=1,
                leaves=n,
            )

    if wanted & {"torch", "modules"}:
        try:
            import torch_scenarios
        except ImportError:
            print("torch scenarios skipped: torch is not installed")
        else:
            if "torch" in wanted:
                torch_scenarios.run_gpt2(run, args.quick)
            if "modules" in wanted:
                torch_scenarios.run_modules(run, args.quick)

    if "file" in wanted:
        import file_scenarios

        file_scenarios.run_all(run, args.quick)

    result = {
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "numpy": np.__version__,
            **baselines.versions(),
        },
        "quick": args.quick,
        "limit_bytes_per_s": run.limit["bytes_per_s"],
        "limit_threads": run.limit["threads"],
        "rows": run.rows,
    }
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=2))
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
