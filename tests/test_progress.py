"""progress= reports a long copy or save, and Ctrl-C stops it with KeyboardInterrupt."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest

import fastload

BIG = 48 << 20  # float32 elements per array: 192 MiB, several ticks of copying


@pytest.fixture(scope="module")
def big():
    dst = [np.zeros(BIG, np.float32) for _ in range(2)]
    src = [np.ones(BIG, np.float32) for _ in range(2)]
    return dst, src


def test_progress_reports_bytes_done_up_to_the_total(big):
    dst, src = big
    seen = []
    fastload.loadmodel(dst, src, threads=1, progress=lambda done, total: seen.append((done, total)))
    total = 2 * BIG * 4
    assert seen[-1] == (total, total)
    assert all(t == total for _, t in seen)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)
    assert all(np.array_equal(d, s) for d, s in zip(dst, src))


def test_an_exception_from_progress_stops_the_load_and_propagates(big):
    dst, src = big

    def interrupt(done, total):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fastload.loadmodel(dst, src, progress=interrupt)
    with pytest.raises(TypeError, match="progress must be"):
        fastload.loadmodel(dst, src, progress="yes")


def test_progress_bar_on_stderr(big, capsys):
    dst, src = big
    fastload.loadmodel(dst, src, progress=True)
    err = capsys.readouterr().err
    assert "fastload: loading" in err and "100%" in err


def test_save_progress_and_interrupted_save_keeps_the_old_file(tmp_path, big):
    path = tmp_path / "big.safetensors"
    fastload.save(path, {"w": np.zeros(4)})
    old = path.read_bytes()
    _, src = big

    def interrupt(done, total):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fastload.save(path, {"a": src[0], "b": src[1]}, progress=interrupt)
    assert path.read_bytes() == old
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.safetensors"]
    seen = []
    fastload.save(path, {"a": src[0]}, progress=lambda d, t: seen.append((d, t)))
    assert seen[-1][0] == seen[-1][1] == path.stat().st_size


def test_a_save_of_many_small_arrays_reports_every_64_mib_and_stops_between(tmp_path):
    # 48 arrays of 4 MiB: none is as large as one report's worth of bytes.
    state = {f"w{i}": np.full(1 << 20, i, np.float32) for i in range(48)}
    seen = []
    path = tmp_path / "many.safetensors"
    fastload.save(path, state, progress=lambda d, t: seen.append(d))
    assert len(seen) >= 192 // 64 and seen[-1] == path.stat().st_size

    old = path.read_bytes()
    stopped_at = []

    def interrupt(done, total):
        stopped_at.append((done, total))
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fastload.save(path, {k: v + 1 for k, v in state.items()}, progress=interrupt)
    assert 0 < stopped_at[0][0] < stopped_at[0][1]  # between arrays, not at the end
    assert [p.name for p in tmp_path.iterdir()] == ["many.safetensors"]
    assert path.read_bytes() == old


def test_sharded_save_progress_counts_up_to_its_total(tmp_path):
    state = {f"w{i}": np.full(1000, i, np.float32) for i in range(4)}
    seen = []
    index = tmp_path / "model.safetensors.index.json"
    fastload.save(index, state, max_shard_size=4000, progress=lambda d, t: seen.append((d, t)))
    total = 4 * 4000
    assert seen[-1] == (total, total)
    assert all(t == total and 0 <= d <= total for d, t in seen)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)


def test_ctrl_c_stops_a_long_copy():
    # SIGINT arrives while the copy runs with the GIL released; the load must end with
    # KeyboardInterrupt soon after, not only when the copy is done.
    code = textwrap.dedent(
        """
        import os, signal, sys, threading, time
        import numpy as np, fastload
        dst = [np.zeros(64 << 20, np.float32) for _ in range(8)]
        src = [np.ones(64 << 20, np.float32) for _ in range(8)]
        fastload.loadmodel(dst, src)  # pages touched, first run out of the way
        def ring():
            time.sleep(0.15)
            os.kill(os.getpid(), signal.SIGINT)
        threading.Thread(target=ring).start()
        start = time.perf_counter()
        try:
            for _ in range(50):
                fastload.loadmodel(dst, src, threads=1)
        except KeyboardInterrupt:
            print("interrupted after", time.perf_counter() - start)
            sys.exit(0)
        sys.exit("never interrupted")
        """
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert float(result.stdout.split()[-1]) < 1.5


def test_a_bar_ends_its_line_when_the_job_is_stopped(capsys):
    from fastload._progress import reporting

    with pytest.raises(KeyboardInterrupt):
        with reporting(True, "fastload: loading") as report:
            report(1 << 20, 1 << 30)
            raise KeyboardInterrupt
    err = capsys.readouterr().err
    assert err.startswith("\rfastload: loading [") and err.endswith("\n")
    assert err.count("\n") == 1


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="needs /proc")
def test_threads_1_copies_on_the_calling_thread_between_its_reports(big):
    dst, src = big
    before = len(os.listdir("/proc/self/task"))
    seen = []

    def report(done, total):
        seen.append((threading.get_ident(), len(os.listdir("/proc/self/task")), done))

    fastload.loadmodel(dst, src, threads=1, progress=report)
    assert {ident for ident, _, _ in seen} == {threading.get_ident()}
    assert max(count for _, count, _ in seen) == before  # no thread started for the copy
    assert seen[0][2] == 0 and seen[-1][2] == 2 * BIG * 4
    assert [done for _, _, done in seen].count(2 * BIG * 4) == 1


def test_a_slow_progress_callable_is_called_about_every_tick_of_copying(big):
    import time

    dst, src = big
    calls = []

    def slow(done, total):
        calls.append(done)
        time.sleep(0.15)  # longer than a tick: the copy between calls still takes one

    fastload.loadmodel(dst, src, threads=1, progress=slow)
    assert calls.count(2 * BIG * 4) == 1
    # 384 MiB copy in ~100 ms ticks: a handful of calls, not one per 1 MiB task.
    assert len(calls) < 20
