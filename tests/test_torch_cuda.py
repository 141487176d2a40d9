"""PyTorch on a GPU: loads in every direction, pinned staging of large host <-> GPU
transfers, ties compared bit for bit. The staging plan's pieces are tested without a GPU."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import fastload
from fastload import LoadError

torch = pytest.importorskip("torch")
nn = torch.nn

from tests_torch_models import TinyGPT, assert_equal_snapshot, build, snapshot  # noqa: E402

from fastload import _staging  # noqa: E402

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def test_chunks_grow_with_the_load_within_bounds():
    assert _staging.chunk_size(1 << 20) == _staging.CHUNK_MIN
    assert _staging.chunk_size(256 << 20) == 32 << 20
    assert _staging.chunk_size(10 << 30) == _staging.CHUNK_MAX


def test_large_contiguous_copies_split_into_chunks_that_cover_them():
    host = np.arange(10_000, dtype=np.float32)
    device = torch.zeros(10_000, dtype=torch.float16)
    # Split by what a part takes in a buffer, in the GPU side's dtype (2 bytes here).
    parts = _staging.pieces(host, device, chunk=4096)
    assert [p[0].size for p in parts] == [2048] * 4 + [1808]
    assert all(np.shares_memory(h, host) for h, _ in parts)
    for h, d in parts:
        d.copy_(torch.from_numpy(h))
    assert torch.equal(device, torch.from_numpy(host).half())
    # A strided side cannot be cut into flat ranges: the copy is left to torch.
    assert _staging.pieces(host[::2], device[::2], chunk=4096) is None
    assert len(_staging.pieces(host[:100:2], device[:100:2], chunk=4096)) == 1


def test_groups_fit_their_buffer_at_aligned_offsets():
    sizes = [3, 1000, 4096, 10, 3000, 1]
    parts = [(np.zeros(n, np.uint8), torch.zeros(n, dtype=torch.uint8)) for n in sizes]
    groups = _staging.groups(parts, chunk=4096)
    assert [len(g) for g in groups] == [2, 1, 3]
    for group in groups:
        assert all(p.offset % _staging.ALIGN == 0 for p in group)
        assert group[-1].offset + group[-1].host.nbytes <= 4096
    assert [p.host.nbytes for g in groups for p in g] == sizes


def test_staging_is_refused_where_memory_is_shared():
    base, other = torch.zeros(100), torch.zeros(100)
    assert _staging.disjoint([(base[:50], other), (base[50:], other)])
    assert not _staging.disjoint([(base[:60], other), (base[50:], other)])
    assert not _staging.disjoint([(base[:50], base[40:60])])
    assert _staging.disjoint([(base[:50], other[:60]), (base[50:], other[40:])])
    # Interleaved views share no element, but their spans cross: staging is not risked.
    assert not _staging.disjoint([(base[::2], other), (base[1::2], other)])


@cuda
@pytest.mark.parametrize("direction", ["host_to_device", "device_to_host", "device_to_device"])
def test_cuda_loads(direction):
    src, dst = build(TinyGPT, 1), build(TinyGPT, 0)
    if direction in ("device_to_host", "device_to_device"):
        src = src.cuda()
    if direction in ("host_to_device", "device_to_device"):
        dst = dst.cuda()
    fastload.loadmodel(dst, src)
    assert dst.lm_head.weight is dst.wte.weight
    for (key, a), b in zip(dst.state_dict().items(), src.state_dict().values()):
        assert torch.equal(a.cpu(), b.cpu()), key


@cuda
def test_cuda_mismatched_tie_sources_are_refused():
    dst = build(TinyGPT, 0).cuda()
    bad = {k: v.clone() for k, v in build(TinyGPT, 1).state_dict().items()}
    bad["lm_head.weight"] += 1
    before = snapshot(dst)
    with pytest.raises(LoadError, match="lm_head.weight"):
        fastload.loadmodel(dst, bad)
    assert_equal_snapshot(dst, before)


@cuda
def test_cuda_tie_sources_are_compared_bit_for_bit():
    dst = build(TinyGPT, 0).cuda()
    same = {k: v.clone() for k, v in build(TinyGPT, 1).state_dict().items()}
    same["wte.weight"][0, 0] = float("nan")
    same["lm_head.weight"] = same["wte.weight"].clone()  # equal bits, another buffer
    fastload.loadmodel(dst, same)
    assert torch.isnan(dst.lm_head.weight[0, 0])
    same["lm_head.weight"][0, 1] = -same["wte.weight"][0, 1]
    same["wte.weight"][0, 1] = 0.0
    same["lm_head.weight"][0, 1] = -0.0
    with pytest.raises(LoadError, match="lm_head.weight"):
        fastload.loadmodel(dst, same)


class Wide(nn.Module):
    """About 70 MB of parameters: large enough to be staged, with tensors split across
    buffers, a tie, a small bias and a buffer."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(4000, 2048)
        self.proj = nn.Linear(2048, 4000)
        self.proj.weight = self.embed.weight
        self.mlp = nn.Linear(2048, 2048)
        self.register_buffer("steps", torch.zeros((), dtype=torch.int64))


def wide(seed: int) -> Wide:
    torch.manual_seed(seed)
    model = Wide()
    model.steps.fill_(seed)
    return model


def count_calls(monkeypatch, name):
    calls = []
    original = getattr(_staging, name)

    def counted(*args):
        calls.append(args)
        return original(*args)

    monkeypatch.setattr(_staging, name, counted)
    return calls


@cuda
@pytest.mark.parametrize("source", ["module", "state_dict", "numpy", "file", "pinned"])
def test_host_to_device_is_staged_and_exact(source, monkeypatch, tmp_path):
    src, dst = wide(1), wide(0).cuda()
    feed = {
        "module": src,
        "state_dict": src.state_dict(),
        "numpy": {k: v.numpy() for k, v in src.state_dict().items()},
        "file": tmp_path / "wide.safetensors",
        "pinned": {k: v.pin_memory() for k, v in src.state_dict().items()},
    }[source]
    if source == "file":
        fastload.save(feed, src)
    staged = count_calls(monkeypatch, "host_to_device")
    weight = dst.embed.weight
    fastload.loadmodel(dst, feed)
    # A pinned source is already as fast as the bus: torch copies it directly.
    assert len(staged) == (0 if source == "pinned" else 1)
    assert dst.embed.weight is weight and dst.proj.weight is weight
    for (key, a), b in zip(dst.state_dict().items(), src.state_dict().values()):
        assert torch.equal(a.cpu(), b), key


@cuda
def test_casting_uploads_cast_on_the_cpu_like_a_blocking_copy(monkeypatch):
    # torch casts a blocking upload on the CPU: staged, the cast is the same CPU code, so
    # NaN payloads, infinities and subnormals come out as with `load_state_dict`.
    src = wide(1)
    with torch.no_grad():
        src.mlp.weight[0, :4] = torch.tensor([float("nan"), -float("nan"), 1e38, 3.0e-39])
    dst = wide(0).to(device="cuda", dtype=torch.bfloat16)
    staged = count_calls(monkeypatch, "host_to_device")
    fastload.loadmodel(dst, src)
    assert len(staged) == 1
    reference = wide(0).to(device="cuda", dtype=torch.bfloat16)
    reference.load_state_dict(src.state_dict())
    for (key, a), b in zip(dst.state_dict().items(), reference.state_dict().values()):
        assert torch.equal(a.view(-1).view(torch.uint8), b.view(-1).view(torch.uint8)), key


@cuda
def test_casting_downloads_cast_on_the_cpu_like_a_blocking_copy(monkeypatch):
    src = wide(1)
    with torch.no_grad():
        src.mlp.weight[0, :3] = torch.tensor([float("nan"), 1e38, 3.0e-39])
    src = src.cuda()
    dst = wide(0).to(dtype=torch.float16)
    staged = count_calls(monkeypatch, "device_to_host")
    fastload.loadmodel(dst, src)
    assert len(staged) == 1
    reference = wide(0).to(dtype=torch.float16)
    reference.load_state_dict(src.state_dict())
    for (key, a), b in zip(dst.state_dict().items(), reference.state_dict().values()):
        assert torch.equal(a.view(-1).view(torch.uint8), b.view(-1).view(torch.uint8)), key


def test_tie_sources_compare_as_they_read():
    from fastload._torch import _same_values

    x = torch.tensor([1 + 2j, float("nan")], dtype=torch.complex64)
    assert _same_values(x, x.clone(), torch.complex64)  # NaN bits match
    assert not _same_values(x, x.conj(), torch.complex64)  # same memory, read conjugated
    assert _same_values(x.conj(), x.conj().clone(), torch.complex64)
    y = torch.tensor([0.0, 1.5])
    assert not _same_values(y, -y, torch.float32)  # -0.0 has other bits
    assert not _same_values(y, torch._neg_view(y), torch.float32)


def test_loads_that_torch_copies_run_stay_inside_their_loads_reservation(monkeypatch):
    # Staging runs loads of its own while the outer load holds its reservation (until its
    # torch copies are done): they must not wait for it, nor refuse to run inside it.
    from fastload import _fastload, _torch

    n = 1000
    memory = np.zeros(3 * n, np.float32)
    inner = {}

    def run(self, threads=0):
        for reserve in (True, False):
            try:
                _fastload.loadmodel(
                    memory[n : 2 * n],
                    np.full(n, 2.0, np.float32),
                    None,
                    True,
                    "no",
                    1,
                    None,
                    reserve,
                )
                inner[reserve] = "loaded"
            except RuntimeError as err:
                inner[reserve] = str(err)
        original(self, threads)

    original = _torch.TorchCopies.run
    monkeypatch.setattr(_torch.TorchCopies, "run", run)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # (complex32 is experimental)
        half = torch.tensor([1 + 2j]).to(torch.complex32)
    dst = {"a": memory[:n], "c": memory[2 * n :], "z": torch.zeros(1, dtype=torch.complex64)}
    src = {"a": np.ones(n, np.float32), "c": np.full(n, 3.0, np.float32), "z": half}
    fastload.loadmodel(dst, src)  # complex32, which NumPy lacks, is a leaf torch copies
    assert inner[False] == "loaded" and "already loading" in inner[True]
    assert memory[0] == 1 and memory[n] == 2 and memory[-1] == 3
    assert dst["z"][0] == 1 + 2j


@cuda
def test_cpu_model_from_a_partly_gpu_source_is_staged_inside_the_load(monkeypatch):
    # The CPU destination torch fills lies between two arrays the same load writes.
    n = 6 << 20
    memory = np.zeros(3 * n, np.float32)
    dst = {"a": memory[:n], "b": torch.from_numpy(memory[n : 2 * n]), "c": memory[2 * n :]}
    src = {
        "a": np.ones(n, np.float32),
        "b": torch.full((n,), 2.0, device="cuda"),
        "c": np.full(n, 3.0, np.float32),
    }
    staged = count_calls(monkeypatch, "device_to_host")
    fastload.loadmodel(dst, src)
    assert len(staged) == 1
    assert memory[0] == 1 and memory[n] == 2 and memory[-1] == 3


@cuda
def test_device_to_host_is_staged_and_exact(monkeypatch):
    src, dst = wide(1).cuda(), wide(0)
    staged = count_calls(monkeypatch, "device_to_host")
    fastload.loadmodel(dst, src)
    assert len(staged) == 1
    for (key, a), b in zip(dst.state_dict().items(), src.state_dict().values()):
        assert torch.equal(a, b.cpu()), key
    # Into NumPy arrays, as a state.
    arrays = {k: np.zeros(tuple(v.shape), np.float32) for k, v in src.state_dict().items()}
    arrays["steps"] = np.zeros((), np.int64)
    del arrays["proj.weight"]
    fastload.loadmodel(arrays, {k: v for k, v in src.state_dict().items() if k != "proj.weight"})
    assert np.array_equal(arrays["embed.weight"], src.embed.weight.detach().cpu().numpy())
    assert arrays["steps"] == 1


@cuda
def test_overlapping_destinations_are_written_in_walk_order(monkeypatch):
    n = 8 << 20
    base = torch.zeros(2 * n, device="cuda")
    dst = [base[: n + 1000], base[n:]]
    src = [torch.full((n + 1000,), 1.0), torch.full((n,), 2.0)]
    staged = count_calls(monkeypatch, "host_to_device")
    fastload.loadmodel(dst, src)
    assert not staged
    assert base[n - 1] == 1.0 and base[n] == 2.0 and base[-1] == 2.0


@cuda
def test_refused_staged_load_leaves_the_gpu_model_unchanged():
    dst = wide(0).cuda()
    bad = dict(wide(1).state_dict())
    bad["mlp.weight"] = torch.zeros(2048, 2047)
    before = snapshot(dst)
    with pytest.raises(LoadError, match="mlp.weight"):
        fastload.loadmodel(dst, bad)
    assert_equal_snapshot(dst, before)


@cuda
def test_gpu_destinations_torch_cannot_write_are_refused_before_anything_is_written():
    with torch.inference_mode():
        inference = torch.zeros(3, device="cuda")
    cases = [
        (torch.zeros(1, device="cuda").expand(3), torch.ones(3), "elements share memory"),
        (inference, torch.ones(3, device="cuda"), "an inference tensor"),
    ]
    if hasattr(torch, "float4_e2m1fn_x2"):
        float4 = torch.zeros(3, dtype=torch.uint8, device="cuda").view(torch.float4_e2m1fn_x2)
        cases.append((torch.zeros(3, device="cuda"), float4, "torch cannot copy float4"))
    for dst, src, message in cases:
        earlier = torch.zeros(2, device="cuda")
        with pytest.raises(LoadError, match=f"s: [^\n]*{message}"):
            fastload.loadmodel({"a": earlier, "s": dst}, {"a": torch.ones(2), "s": src})
        assert earlier.tolist() == [0.0, 0.0] and dst.tolist() == [0.0, 0.0, 0.0]
    with torch.inference_mode():
        fastload.loadmodel(inference, torch.ones(3))
    assert inference.tolist() == [1.0, 1.0, 1.0]
