"""Checkpoint-file scenarios: gpt2 loaded from a safetensors file with a warm page cache,
against ``safetensors.numpy.load_file`` + copy and ``safetensors.torch.load_model``."""

from __future__ import annotations

import os
import tempfile
import threading
import time

import numpy as np
import scenarios

import fastload
from fastload.demo import arrays_of


def peak_extra_anon(fn) -> int:
    """Peak anonymous memory (heap, not the mapped file's page cache) added while ``fn``
    runs, sampled every millisecond from /proc (Linux; 0 elsewhere)."""

    def anon() -> int:
        try:
            with open("/proc/self/status") as f:
                for line in f:
                    if line.startswith("RssAnon:"):
                        return int(line.split()[1]) * 1024
        except OSError:
            pass
        return 0

    before, peak, done = anon(), [0], threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], anon())
            time.sleep(0.001)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        fn()
    finally:
        done.set()
        sampler.join()
    return max(0, max(peak[0], anon()) - before)


def run_all(run, quick: bool) -> None:
    """Records the file scenarios on ``run`` (a ``run.Runner``)."""
    scale = 2 if quick else 1
    folder = tempfile.mkdtemp(prefix="fastload-bench-")
    path = os.path.join(folder, "gpt2.safetensors")
    try:
        src = scenarios.gpt2(seed=1, scale=scale)
        fastload.save(path, src)
        size = os.path.getsize(path)
        with open(path, "rb") as f:  # a warm page cache
            while f.read(64 << 20):
                pass
        dst = scenarios.gpt2(fill=False, scale=scale)
        written = sum(a.nbytes for a in arrays_of(dst))
        flat_dst = fastload.flatten(dst)
        fast = run.time(lambda: fastload.loadmodel(dst, path))
        others = {}
        try:
            from safetensors.numpy import load_file

            # Each destination array with the file key it loads from (ties included).
            stored = set(load_file(path))
            first_key = {}
            for key, array in flat_dst.items():
                first_key.setdefault(id(array), key)
            pairs = [
                (array, key if key in stored else first_key[id(array)])
                for key, array in flat_dst.items()
            ]

            def numpy_baseline():
                loaded = load_file(path)
                for array, key in pairs:
                    np.copyto(array, loaded[key])

            others["load_file + copy"] = run.time(numpy_baseline)
        except ImportError:
            pass
        memory = peak_extra_anon(lambda: fastload.loadmodel(dst, path))
        assert all(
            np.array_equal(a, b) for a, b in zip(flat_dst.values(), fastload.flatten(src).values())
        )
        run.record(
            "file gpt2",
            fast,
            written=written,
            leaves=len(flat_dst),
            others=others,
            extra={"file_bytes": size, "peak_extra_anon_bytes": memory},
        )
        print(
            f"{'':14} peak extra memory {memory / 1e6:.1f} MB ({100 * memory / size:.2f}% of file)"
        )
        _torch_load_model(run, path, scale, written)
    finally:
        for name in os.listdir(folder):
            os.remove(os.path.join(folder, name))
        os.rmdir(folder)


def _torch_load_model(run, path: str, scale: int, written: int) -> None:
    """fastload and ``safetensors.torch.load_model`` into the same ``nn.Module``."""
    try:
        import torch_scenarios
        from safetensors.torch import load_model
    except ImportError:
        return
    module = torch_scenarios.gpt2(seed=0, scale=scale)
    fast = run.time(lambda: fastload.loadmodel(module, path))
    others = {"torch load_model": run.time(lambda: load_model(module, path))}
    run.record("file gpt2 torch", fast, written=written, others=others)
