"""No leaks: memory back to its level after repeated loads, reference counts unchanged,
mapped files unmapped once nothing uses them."""

from __future__ import annotations

import gc
import sys

import numpy as np
import pytest

import fastload


def rss() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


linux = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


def tiny_tree(n: int, value: float):
    return [{"w": np.full(4, value, np.float32), "b": np.full(2, value)} for _ in range(n)]


def settle():
    gc.collect()
    return rss()


@linux
def test_repeated_loads_of_100k_leaves_return_memory():
    dst, src = tiny_tree(50_000, 0.0), tiny_tree(50_000, 1.0)
    half = [{"w": np.zeros(4, np.float16), "b": np.zeros(2, np.float32)} for _ in range(50_000)]
    bad = tiny_tree(50_000, 2.0)[:-1] + [{"w": np.ones(5), "b": 1}]

    def each():
        fastload.loadmodel(dst, src)
        fastload.loadmodel(half, src)
        fastload.state(dst)
        with pytest.raises(fastload.DimensionMismatch):
            fastload.loadmodel(dst, bad)

    for _ in range(3):  # warm up: plans reach their size, caches fill
        each()
    before = settle()
    for _ in range(15):
        each()
    grown = settle() - before
    # A leak of one pointer per leaf and load would be 12 MB here.
    assert grown < 4 << 20, f"RSS grew by {grown / 1e6:.1f} MB over 15 rounds"


@linux
def test_repeated_multi_gigabyte_loads_return_memory():
    n = 1 << 28  # 1 GiB of float32 per side, in 4 arrays
    dst = [np.zeros(n // 4, np.float32) for _ in range(4)]
    src = [np.ones(n // 4, np.float32) for _ in range(4)]
    wide = [np.ones(n // 16, np.float64)]  # 512 MiB, cast into a slice of dst[0]
    fastload.loadmodel(dst, src)
    before = settle()
    for _ in range(4):
        fastload.loadmodel(dst, src)
        fastload.loadmodel([dst[0][: n // 16]], wide)
    grown = settle() - before
    assert grown < 64 << 20, f"RSS grew by {grown / 1e6:.1f} MB"
    assert dst[3][-1] == 1.0


def refcounts(objects):
    return [sys.getrefcount(o) for o in objects]


def test_reference_counts_are_unchanged_by_loads_good_and_bad(tmp_path):
    weight = np.zeros((3, 3), np.float32)
    dst = {"layers": [{"w": weight, "b": np.zeros(3)}], "head": weight, "act": np.tanh}
    src = {"layers": [{"w": np.ones((3, 3)), "b": np.ones(3)}], "head": np.ones((3, 3)), "act": 1}
    bad = {"layers": [{"w": np.ones((2, 3)), "b": np.ones(3)}], "head": np.ones((3, 3))}
    objects = [dst, dst["layers"], dst["layers"][0], weight, dst["layers"][0]["b"], src, bad]
    objects += [src["layers"][0]["w"], src["head"], bad["layers"][0]["w"]]
    path = tmp_path / "m.safetensors"
    fastload.save(path, src)
    gc.collect()
    before = refcounts(objects)
    for _ in range(5):
        fastload.loadmodel(dst, src)
        fastload.loadmodel(dst, src, casting="unsafe", threads=1)
        with pytest.raises(fastload.LoadError):
            fastload.loadmodel(dst, bad)
        fastload.state(dst)
        fastload.children(dst)
        fastload.loadmodel(dst, path)
        fastload.save(path, dst)
    gc.collect()
    assert refcounts(objects) == before


@linux
def test_a_mapped_file_is_unmapped_once_nothing_uses_it(tmp_path):
    path = tmp_path / "mapped.safetensors"
    fastload.save(path, {"w": np.ones(1000)})

    def mapped():
        with open("/proc/self/maps") as f:
            return str(path) in f.read()

    dst = {"w": np.zeros(1000)}
    fastload.loadmodel(dst, path)
    gc.collect()
    assert not mapped()
    tree = fastload.load(path)
    assert mapped()
    del tree
    gc.collect()
    assert not mapped()
