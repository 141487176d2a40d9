"""The GIL is released while bytes are copied, and concurrent loads do not interfere."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import warnings

import numpy as np
import pytest

import fastload
from fastload import _fastload


def run_together(work, count):
    """Runs ``work(i)`` for ``i < count`` on as many threads, started together; raises
    the first exception any of them raised."""
    errors = []
    barrier = threading.Barrier(count)

    def run(i):
        try:
            barrier.wait()
            work(i)
        except Exception as e:  # reported below
            errors.append(e)

    workers = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    if errors:
        raise errors[0]


@pytest.mark.parametrize("threads", [1, 2])
def test_other_python_threads_run_during_a_large_copy(threads):
    src = [np.ones(16 << 20, np.float32) for _ in range(6)]  # 6 x 64 MiB
    dst = [np.zeros(16 << 20, np.float32) for _ in range(6)]
    fastload.loadmodel(dst, src, threads=threads)  # warm up: fault the pages in
    ticks = []
    done = threading.Event()

    def load():
        fastload.loadmodel(dst, src, threads=threads)
        done.set()

    worker = threading.Thread(target=load)
    start = time.perf_counter()
    worker.start()
    while not done.is_set():
        ticks.append(time.perf_counter())
    worker.join()
    duration = time.perf_counter() - start
    gaps = np.diff([start, *ticks, start + duration])
    # Holding the GIL through the copy would stall this loop for the whole copy.
    assert gaps.max() < 0.5 * duration, (gaps.max(), duration)
    assert len(ticks) > 100


def test_four_threads_load_separate_models_at_once():
    rng = np.random.default_rng(0)

    def layer():
        return {"w": rng.normal(size=(300, 300)), "b": rng.normal(size=300)}

    sources = [{"layers": [layer() for _ in range(6)]} for _ in range(4)]
    models = [
        {"layers": [{"w": np.zeros((300, 300), np.float32), "b": np.zeros(300)} for _ in range(6)]}
        for _ in range(4)
    ]

    def load(i):
        for _ in range(20):
            fastload.loadmodel(models[i], sources[i], threads=2)

    run_together(load, 4)
    for model, source in zip(models, sources):
        for got, want in zip(model["layers"], source["layers"]):
            np.testing.assert_array_equal(got["w"], want["w"].astype(np.float32))
            np.testing.assert_array_equal(got["b"], want["b"])


def test_default_thread_count_follows_the_environment(monkeypatch):
    monkeypatch.setenv("FASTLOAD_NUM_THREADS", "3")
    assert _fastload.default_threads() == 3
    monkeypatch.setenv("FASTLOAD_NUM_THREADS", "not a number")
    assert _fastload.default_threads() >= 1
    monkeypatch.delenv("FASTLOAD_NUM_THREADS")
    assert _fastload.default_threads() >= 1


@pytest.mark.parametrize(
    "value", ["not a number", "0", "-3", "1.5", "", "3_0", "99999999999999999999999"]
)
def test_a_thread_setting_that_is_ignored_is_warned_about_once(monkeypatch, value):
    monkeypatch.setenv("FASTLOAD_NUM_THREADS", value)
    dst, src = {"w": np.zeros(3)}, {"w": np.ones(3)}
    with pytest.warns(RuntimeWarning, match="FASTLOAD_NUM_THREADS=.* every core is used"):
        fastload.loadmodel(dst, src)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fastload.loadmodel(dst, src)  # once per value
        fastload.loadmodel(dst, src, threads=1)
    assert _fastload.default_threads() >= 1 and dst["w"][0] == 1


@pytest.mark.parametrize("value", ["2", " 4 ", "+1"])
def test_a_valid_thread_setting_is_not_warned_about(monkeypatch, value):
    monkeypatch.setenv("FASTLOAD_NUM_THREADS", value)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fastload.loadmodel({"w": np.zeros(3)}, {"w": np.ones(3)})
    assert _fastload.default_threads() == int(value)


def test_a_load_large_enough_to_stream_past_the_caches_is_exact():
    # 48 MiB in leaves of odd sizes and offsets: the streamed path and its edges.
    rng = np.random.default_rng(7)
    sizes = [(12 << 20) + 3, (6 << 20) + 1, 4099, (4 << 20) - 5]
    src = [rng.standard_normal(n, dtype=np.float32)[1:] for n in sizes]
    dst = [np.zeros(n, np.float32)[1:] for n in sizes]
    fastload.loadmodel(dst, src)
    for d, s in zip(dst, src):
        np.testing.assert_array_equal(d, s)


@pytest.mark.parametrize("threads", [1, 2])
def test_two_threads_loading_into_one_model_give_one_load_after_the_other(threads):
    # Two sources of many leaves (each copy takes long enough for the two to meet);
    # whatever the timing, the model ends up holding one source whole, never a mix.
    leaves, size = 48, 1 << 18
    sources = [[np.full(size, float(k + 1), np.float32) for _ in range(leaves)] for k in range(2)]
    model = [np.zeros(size, np.float32) for _ in range(leaves)]
    for _ in range(10):
        run_together(lambda k: fastload.loadmodel(model, sources[k], threads=threads), 2)
        values = {float(leaf[0]) for leaf in model} | {float(leaf[-1]) for leaf in model}
        assert len(values) == 1 and values <= {1.0, 2.0}, values


def test_two_threads_loading_leaves_torch_copies_into_one_model_give_one_load_after_the_other():
    torch = pytest.importorskip("torch")
    import warnings

    leaves, size = 24, 1 << 16
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # (complex32 is experimental)
        # complex32, which NumPy lacks: every leaf is copied by torch.
        sources = [
            [torch.full((size,), complex(k + 1, 0)).to(torch.complex32) for _ in range(leaves)]
            for k in range(2)
        ]
    model = [torch.zeros(size, dtype=torch.complex64) for _ in range(leaves)]
    for _ in range(10):
        run_together(lambda k: fastload.loadmodel(model, sources[k]), 2)
        values = {complex(leaf[0]) for leaf in model} | {complex(leaf[-1]) for leaf in model}
        assert len(values) == 1 and values <= {1, 2}, values


def test_a_load_started_inside_another_into_the_same_model_is_an_error():
    model = [np.zeros(32 << 20, np.float32)]  # 128 MiB: a watched copy with a progress call
    inner_errors = []

    def progress(done, total):
        if not inner_errors:
            try:
                fastload.loadmodel(model, [np.ones(32 << 20, np.float32)])
            except RuntimeError as e:
                inner_errors.append(e)

    fastload.loadmodel(model, [np.full(32 << 20, 2.0, np.float32)], progress=progress)
    assert inner_errors and "already loading into this destination" in str(inner_errors[0])
    assert model[0][0] == 2.0 and model[0][-1] == 2.0


_LOAD_IN_A_FORKED_CHILD = """
import os, numpy as np, fastload
def load():
    dst, src = [np.zeros(1 << 21) for _ in range(4)], [np.full(1 << 21, 2.0) for _ in range(4)]
    fastload.loadmodel(dst, src, threads=2)
    return all((d == 2.0).all() for d in dst)
assert load()  # the parent's pool now has threads
pid = os.fork()
if pid == 0:
    os._exit(0 if load() else 1)
_, status = os.waitpid(pid, 0)
print(os.waitstatus_to_exitcode(status))
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork() here")
def test_a_child_made_by_fork_loads_with_threads_of_its_own():
    # Its parent's pools have no threads in the child: a job sent to one would never end.
    done = subprocess.run(
        [sys.executable, "-c", _LOAD_IN_A_FORKED_CHILD], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "0"
