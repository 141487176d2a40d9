"""PyTorch: modules and tensors load to the same values as `load_state_dict`, atomically."""

from __future__ import annotations

import copy
import os
import re
import subprocess
import sys
import warnings

import numpy as np
import pytest

import fastload
from fastload import ArgumentError, DimensionMismatch, LoadError

torch = pytest.importorskip("torch")
nn = torch.nn
ml_dtypes = pytest.importorskip("ml_dtypes")
from tests_torch_models import (  # noqa: E402
    MODELS,
    TinyGPT,
    assert_equal_snapshot,
    build,
    mlp,
    snapshot,
)

from fastload import _torch, _tree  # noqa: E402


def assert_same_state(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for key in sa:
        assert sa[key].dtype == sb[key].dtype, key
        assert torch.equal(sa[key], sb[key]), key


def with_load_state_dict(name):
    """Two models ``name`` (to load into, to load from), and a copy of the first that
    ``load_state_dict`` loaded the second into."""
    dst, src = build(MODELS[name], 0), build(MODELS[name], 1)
    expected = copy.deepcopy(dst)
    expected.load_state_dict(src.state_dict())
    return dst, src, expected


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("source", ["module", "state_dict", "state", "numpy"])
def test_same_values_as_load_state_dict(name, source):
    dst, src, expected = with_load_state_dict(name)
    feed = {
        "module": src,
        "state_dict": src.state_dict(),
        "state": fastload.state(src),
        "numpy": {k: v.numpy() for k, v in src.state_dict().items()},
    }[source]
    assert fastload.loadmodel(dst, feed) is dst
    assert_same_state(dst, expected)


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("writer", ["fastload.save", "safetensors save_model"])
def test_same_values_from_files_as_load_state_dict(name, writer, tmp_path):
    dst, src, expected = with_load_state_dict(name)
    path = tmp_path / "model.safetensors"
    if writer == "fastload.save":
        fastload.save(path, src)
    else:
        save_model = pytest.importorskip("safetensors.torch").save_model
        save_model(src, str(path))  # a tied tensor under one of its names only
    assert fastload.loadmodel(dst, path) is dst
    assert_same_state(dst, expected)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_parameters_keep_identity_grad_flags_and_optimizer(name):
    dst, src = build(MODELS[name], 0), build(MODELS[name], 1)
    before = {k: (p, p.requires_grad) for k, p in dst.named_parameters()}
    optimizer = torch.optim.SGD(dst.parameters(), lr=0.1)
    fastload.loadmodel(dst, src)
    for key, param in dst.named_parameters():
        assert param is before[key][0]
        assert param.requires_grad == before[key][1]
        assert isinstance(param, nn.Parameter)
    # The optimizer still steps the very parameters that were loaded.
    for param in dst.parameters():
        param.grad = torch.ones_like(param)
    optimizer.step()
    for (key, param), loaded in zip(dst.named_parameters(), src.parameters()):
        assert torch.allclose(param, loaded - 0.1), key


def test_missing_and_unexpected_keys_are_refused_like_load_state_dict():
    dst, src = build(mlp, 0), build(mlp, 1)
    before = snapshot(dst)
    missing = src.state_dict()
    del missing["2.bias"]
    unexpected = dict(src.state_dict(), **{"2.scale": torch.ones(3)})
    for bad in (missing, unexpected):
        with pytest.raises(RuntimeError):
            copy.deepcopy(dst).load_state_dict(bad)
        with pytest.raises(ArgumentError) as info:
            fastload.loadmodel(dst, bad)
        assert "2:" in str(info.value)
        assert "bias" in str(info.value) or "scale" in str(info.value)
        assert_equal_snapshot(dst, before)
    # strict=False skips keys present on one side only and reports them, as
    # load_state_dict does (it returns them).
    with pytest.warns(fastload.SkippedKeysWarning) as record:
        fastload.loadmodel(dst, missing, strict=False)
    reported = copy.deepcopy(dst).load_state_dict(missing, strict=False)
    assert reported.missing_keys == ["2.bias"]
    assert record[0].message.skipped == [("2", ["bias"], [])]
    assert torch.equal(dst[0].weight, src[0].weight)
    assert torch.equal(dst[2].bias, before["2.bias"])


def test_shape_mismatches_are_all_listed_with_paths_and_nothing_is_written():
    dst = build(mlp, 0)
    src = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 4))
    before = snapshot(dst)
    with pytest.raises(RuntimeError):
        copy.deepcopy(dst).load_state_dict(src.state_dict())
    for feed in (src, src.state_dict()):
        with pytest.raises(DimensionMismatch) as info:
            fastload.loadmodel(dst, feed)
        message = str(info.value)
        assert "2 problems" in message
        assert "2.weight: Tried to load size (4, 8) array into size (3, 8)" in message
        assert "2.bias: Tried to load size (4,) array into size (3,)" in message
        assert_equal_snapshot(dst, before)


def test_tied_weights_stay_tied_and_mismatched_tie_sources_are_refused():
    dst, src = build(TinyGPT, 0), build(TinyGPT, 1)
    fastload.loadmodel(dst, src.state_dict())
    assert dst.lm_head.weight is dst.wte.weight
    assert torch.equal(dst.wte.weight, src.wte.weight)

    bad = {k: v.clone() for k, v in src.state_dict().items()}
    bad["lm_head.weight"] += 1
    before = snapshot(dst)
    with pytest.raises(LoadError) as info:
        fastload.loadmodel(dst, bad)
    assert "lm_head.weight" in str(info.value)
    assert_equal_snapshot(dst, before)
    # load_state_dict silently keeps whichever of the two was written last.
    reference = copy.deepcopy(dst)
    reference.load_state_dict(bad)
    assert torch.equal(reference.wte.weight, bad["lm_head.weight"])


def test_non_persistent_buffers_are_not_part_of_the_tree():
    model = TinyGPT()
    assert "mask" not in fastload.state(model)
    assert "mask" not in fastload.children(model)


def test_state_of_a_module_is_nested_and_shares_the_tensors():
    model = build(mlp, 0)
    tree = fastload.state(model)
    assert list(tree) == ["0", "1", "2"]
    assert tree["1"] == {}
    assert tree["0"]["weight"] is model[0].weight
    flat = fastload.flatten(model)
    assert list(flat) == list(model.state_dict())
    for key, value in model.state_dict().items():
        assert torch.equal(flat[key], value)


def test_a_none_parameter_is_an_absent_one():
    with_bias, without = nn.Linear(3, 2), nn.Linear(3, 2, bias=False)
    assert fastload.children(without)["bias"] is False
    # A False destination ignores what is loaded; a False source zeroes its destination.
    fastload.loadmodel(without, with_bias)
    assert torch.equal(without.weight, with_bias.weight)
    fastload.loadmodel(with_bias, without)
    assert torch.equal(with_bias.bias, torch.zeros(2))
    # A flat state_dict cannot name an absent parameter or a module without state.
    model = nn.Sequential(nn.Linear(3, 2, bias=False), nn.ReLU())
    fastload.loadmodel(model, {"0.weight": torch.ones(2, 3)})
    assert torch.equal(model[0].weight, torch.ones(2, 3))


@pytest.mark.parametrize(
    "dtype", [torch.float16, torch.bfloat16, torch.float64, torch.int64, torch.bool]
)
def test_tensor_dtypes_load_bit_for_bit(dtype):
    torch.manual_seed(0)
    src = (torch.randn(5, 7) * 100).to(dtype)
    dst = torch.zeros(5, 7, dtype=dtype)
    fastload.loadmodel([dst], [src])
    assert torch.equal(dst.view(-1), src.view(-1))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_float32_casts_round_like_torch(dtype):
    torch.manual_seed(0)
    src = torch.randn(1000) * torch.logspace(-10, 10, 1000)
    dst = torch.zeros(1000, dtype=dtype)
    fastload.loadmodel({"w": dst}, {"w": src})
    assert torch.equal(dst.view(torch.int16), src.to(dtype).view(torch.int16))


@pytest.mark.parametrize(
    "src_dtype,dst_dtype",
    [
        (torch.float64, torch.float16),  # torch rounds twice, through float32
        (torch.float64, torch.bfloat16),
        (torch.int64, torch.bfloat16),
        (torch.bfloat16, torch.float16),
    ],
    ids=["f64-f16", "f64-bf16", "i64-bf16", "bf16-f16"],
)
@pytest.mark.parametrize("source", ["tensor", "numpy"])
def test_casts_into_tensors_give_load_state_dicts_bits(src_dtype, dst_dtype, source):
    torch.manual_seed(0)
    scale = torch.logspace(-9, 4, 20000, dtype=torch.float64)
    values = (torch.randn(20000, dtype=torch.float64) * scale).to(src_dtype)
    if src_dtype == torch.int64:
        values = torch.randint(-(2**40), 2**40, (20000,))
    expected = nn.Linear(20000, 1, bias=False).to(dst_dtype)
    expected.load_state_dict({"weight": values[None]})
    model = nn.Linear(20000, 1, bias=False).to(dst_dtype)
    weight = model.weight
    src = (
        values[None] if source == "tensor" or src_dtype == torch.bfloat16 else values[None].numpy()
    )
    fastload.loadmodel(model, {"weight": src}, casting="unsafe")
    assert model.weight is weight
    assert torch.equal(
        weight.detach().view(torch.int16), expected.weight.detach().view(torch.int16)
    )


@pytest.mark.parametrize("dst_dtype", ["uint32", "int32", "uint8", "bool"])
def test_complex_into_integer_tensors_gives_copy_s_values_out_of_range_too(dst_dtype):
    if not hasattr(torch, dst_dtype):
        pytest.skip(f"this torch has no {dst_dtype}")
    dtype = getattr(torch, dst_dtype)
    values = [2.03e10 - 0.9j, -float("inf"), -5.3e29, complex("nan"), 3e9, -7.0, 0.5j]
    src = torch.tensor(values, dtype=torch.complex128)
    expected = torch.zeros(len(values), dtype=dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected.copy_(src)
    dst = torch.zeros(len(values), dtype=dtype)
    fastload.loadmodel({"w": dst}, {"w": src.numpy()}, casting="unsafe")
    assert torch.equal(dst, expected)


def test_parameters_tied_through_data_load_from_a_file_holding_one_of_them(tmp_path):
    save_model = pytest.importorskip("safetensors.torch").save_model

    def model(seed):
        torch.manual_seed(seed)
        m = nn.Sequential(nn.Embedding(10, 4), nn.Linear(4, 10, bias=False))
        m[1].weight.data = m[0].weight.data  # two parameters over one memory
        return m

    src, path = model(1), tmp_path / "tied.safetensors"
    save_model(src, str(path))  # stores the tie once, under one of its names
    for source in (path, {"0.weight": src[0].weight.detach()}):
        dst = model(0)
        fastload.loadmodel(dst, source)
        assert torch.equal(dst[1].weight, src[1].weight)
        assert dst[0].weight.data_ptr() == dst[1].weight.data_ptr()
    # Parameters over other memory are not tied: the missing one is still missing.
    dst = model(0)
    dst[1].weight = nn.Parameter(dst[1].weight.detach().clone())
    before = snapshot(dst)
    with pytest.raises(ArgumentError, match="missing keys"):
        fastload.loadmodel(dst, {"0.weight": src[0].weight.detach()})
    assert_equal_snapshot(dst, before)


def test_a_models_own_state_dict_with_one_tied_name_replaced_loads_like_load_state_dict():
    """The other name's source is the tied parameter itself: copying leaf by leaf, it
    holds the new value by the time it is read."""
    model = build(TinyGPT, 0)
    state = dict(model.state_dict())
    tied = ["lm_head.weight"]
    assert state[tied[0]].data_ptr() == state["wte.weight"].data_ptr()
    state["wte.weight"] = torch.randn_like(state["wte.weight"])
    expected = copy.deepcopy(model)
    expected.load_state_dict({**state, **{k: state["wte.weight"] for k in tied}})
    fastload.loadmodel(model, state)
    assert_same_state(model, expected)
    assert model.wte.weight is model.get_parameter(tied[0])


def test_casts_into_tensors_keep_the_checks_of_ties_and_the_walk_order():
    def tied():
        model = nn.Module()
        model.a, model.b = nn.Linear(2, 2, bias=False).half(), nn.Linear(2, 2, bias=False).half()
        model.b.weight = model.a.weight
        return model

    def sources(first, second):
        return {"a.weight": torch.full((2, 2), first), "b.weight": torch.full((2, 2), second)}

    mismatched = {
        "a.weight": sources(1.0, 2.0)["a.weight"].double(),
        "b.weight": torch.full((2, 2), 2.0),
    }
    model = tied()
    with pytest.raises(LoadError, match="b.weight: tied destination parameters"):
        fastload.loadmodel(model, mismatched)
    agreeing = {"a.weight": torch.full((2, 2), 3.0).double(), "b.weight": torch.full((2, 2), 3.0)}
    fastload.loadmodel(model, agreeing)
    assert model.a.weight.tolist() == [[3.0, 3.0], [3.0, 3.0]]

    class Overlapping(nn.Module):  # two buffers over one float16 tensor's memory
        def __init__(self):
            super().__init__()
            base = torch.zeros(6, dtype=torch.float16)
            self.register_buffer("a", base[0:4])
            self.register_buffer("b", base[2:6])

    src = {"a": torch.ones(4, dtype=torch.float64), "b": torch.full((4,), 2.0)}
    model, expected = Overlapping(), Overlapping()
    expected.load_state_dict(src)
    fastload.loadmodel(model, src)
    assert model.a.tolist() == expected.a.tolist() == [1.0, 1.0, 2.0, 2.0]


def test_casts_into_tensors_from_reversed_and_complex_sources_are_torchs():
    values = torch.tensor([1 + 2**-11 + 2**-40, 3.0, -1.5], dtype=torch.float64)
    reversed_source = values.numpy()[::-1]  # torch holds no negative strides
    dst = torch.zeros(3, dtype=torch.float16)
    fastload.loadmodel({"w": dst}, {"w": reversed_source})
    assert torch.equal(dst, torch.from_numpy(reversed_source.copy()).to(torch.float16))
    complex_source = torch.tensor([1 + 1j, 2 - 1j, 0 + 3j])
    real = torch.zeros(3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's, once, as under load_state_dict
        fastload.loadmodel({"w": real}, {"w": complex_source}, casting="unsafe")
    assert real.tolist() == [1.0, 2.0, 0.0]


def test_float8_loads_into_float32_under_the_safe_rule():
    model = nn.Linear(4, 1, bias=False)
    src = torch.tensor([[0.5, 1.0, -2.0, 448.0]]).to(torch.float8_e4m3fn)
    fastload.loadmodel(model, {"weight": src}, casting="safe")
    assert model.weight.tolist() == src.float().tolist()


def test_bfloat16_loads_into_float16_under_the_default_rule_like_load_state_dict():
    src = nn.Linear(3, 4).bfloat16()
    model, expected = nn.Linear(3, 4).half(), nn.Linear(3, 4).half()
    expected.load_state_dict(src.state_dict())
    fastload.loadmodel(model, src)
    assert_same_state(model, expected)


def test_sparse_buffers_load_like_load_state_dict_and_layouts_must_match():
    class Graph(nn.Module):
        def __init__(self, scale, sparse=True):
            super().__init__()
            adjacency = torch.eye(3) * scale
            self.register_buffer("adj", adjacency.to_sparse() if sparse else adjacency)
            self.lin = nn.Linear(2, 2)

    model, expected = Graph(1), Graph(1)
    buffer = model.adj
    expected.load_state_dict(Graph(2).state_dict())
    fastload.loadmodel(model, Graph(2).state_dict())
    assert model.adj is buffer
    assert torch.equal(model.adj.to_dense(), expected.adj.to_dense())
    fastload.loadmodel(model, Graph(3))
    assert torch.equal(model.adj.to_dense(), torch.eye(3) * 3)
    before = {k: v.to_dense().clone() for k, v in model.state_dict().items()}
    with pytest.raises(LoadError, match="adj: cannot load a strided tensor into a sparse_coo one"):
        fastload.loadmodel(model, Graph(4, sparse=False))
    for key, value in model.state_dict().items():
        assert torch.equal(value.to_dense(), before[key]), key


def test_views_and_non_contiguous_tensors():
    base = torch.zeros(4, 6)
    view = base.t()[1:5:2]  # (2, 4), strided
    src = torch.arange(8.0).reshape(2, 4)
    fastload.loadmodel([view], [src])
    assert torch.equal(view, src)
    assert torch.equal(base[:, 1], src[0]) and torch.equal(base[:, 3], src[1])
    assert base.sum() == src.sum()  # nothing else written


@pytest.mark.parametrize(
    "make",
    [
        lambda: torch.zeros(()),  # no dimensions
        lambda: torch.zeros(0, 3),  # no elements
        lambda: torch.zeros(5, 7)[1:4, 2:5],  # an offset into its storage
        lambda: torch.zeros(4, 3).t(),  # Fortran order
        lambda: torch.zeros(6, dtype=torch.bool)[::2],
        lambda: nn.Parameter(torch.zeros(2, 3, dtype=torch.bfloat16)),
        lambda: torch.zeros(3, dtype=torch.int64).expand(2, 3)[0],
    ],
)
def test_tensors_of_every_layout_load_both_ways_like_copy_(make):
    dst, src = make(), make()
    with torch.no_grad():
        src.copy_(torch.arange(src.numel()).reshape(src.shape).to(src.dtype))
    fastload.loadmodel({"w": dst}, {"w": src})
    assert torch.equal(dst, src)
    out = make()
    fastload.loadmodel(
        {"w": out}, {"w": dst.detach().numpy() if dst.dtype != torch.bfloat16 else dst}
    )
    assert torch.equal(out, src)


@pytest.mark.parametrize("dtype", sorted(_torch.VIEW_DTYPES, key=str), ids=lambda d: str(d)[6:])
@pytest.mark.parametrize("kind", ["tensor", "parameter"])
def test_plain_cpu_tensors_of_every_viewable_dtype_are_copied_by_the_core(dtype, kind, monkeypatch):
    try:
        torch.utils.dlpack.to_dlpack(torch.zeros(1, dtype=dtype))
    except Exception:  # older releases: such tensors are viewed through `as_numpy`
        pytest.skip(f"this torch's DLPack does not describe {dtype}")

    def refuse(*args, **kwargs):
        raise AssertionError("a plain CPU tensor left to torch or to Python")

    monkeypatch.setattr(_torch, "as_numpy", refuse)
    monkeypatch.setattr(_torch.TorchCopies, "add", refuse)

    def make(seed):
        values = torch.arange(seed, seed + 60).reshape(3, 4, 5) % 7
        tensor = values.to(dtype)
        return nn.Parameter(tensor, requires_grad=False) if kind == "parameter" else tensor

    dst = {"whole": make(0), "scalar": make(0)[1, 2, 3], "strided": make(0).transpose(0, 2)[1:]}
    src = {"whole": make(3), "scalar": make(3)[1, 2, 3], "strided": make(3).transpose(0, 2)[1:]}
    fastload.loadmodel(dst, src)
    for key in dst:
        assert dst[key].dtype == dtype and dst[key].shape == src[key].shape
        bits = [t.contiguous().reshape(-1).view(torch.uint8) for t in (dst[key], src[key])]
        assert torch.equal(*bits), key


def test_a_negative_view_is_copied_by_torch():
    imag = torch.tensor([1 + 2j, 3 - 4j], dtype=torch.complex64).conj().imag
    assert imag.is_neg()
    dst = torch.zeros(2)
    fastload.loadmodel({"w": dst}, {"w": imag})
    assert dst.tolist() == [-2.0, 4.0]


def test_a_module_whose_dicts_are_not_torchs_loads_through_its_state_dict_names():
    class Remembering(dict):
        pass

    dst, src = mlp(), mlp()
    dst[0]._parameters = Remembering(dst[0]._parameters)
    fastload.loadmodel(dst, src.state_dict())
    assert_same_state(dst, src)
    assert list(fastload.state(dst)["0"]) == ["weight", "bias"]


def test_a_parameter_given_new_memory_during_the_walk_keeps_it_and_the_load_is_refused():
    model = nn.ModuleDict({"a": nn.Linear(4, 4), "b": nn.Linear(4, 4)})
    fresh = torch.full((4, 4), 7.0)

    def swap_once(child):
        if child is model["b"].weight:
            model["a"].weight.data = fresh  # the planned memory is now the old one
        return True

    src = nn.ModuleDict({"a": nn.Linear(4, 4), "b": nn.Linear(4, 4)})
    with pytest.raises(LoadError, match="changed while the trees were walked"):
        fastload.loadmodel(model, src, filter=swap_once)
    assert torch.equal(model["a"].weight.detach(), torch.full((4, 4), 7.0))


def test_numpy_into_torch_and_torch_into_numpy():
    model = nn.Linear(3, 2)
    arrays = {"weight": np.arange(6.0).reshape(2, 3), "bias": np.array([7.0, 8.0])}
    fastload.loadmodel(model, arrays)  # float64 -> float32 under same_kind
    assert torch.equal(model.weight, torch.arange(6.0).reshape(2, 3))
    out = {"weight": np.zeros((2, 3), np.float32), "bias": np.zeros(2, ml_dtypes.bfloat16)}
    fastload.loadmodel(out, model)
    assert np.array_equal(out["weight"], arrays["weight"])
    assert out["bias"].tolist() == [7.0, 8.0]
    with pytest.raises(LoadError) as info:
        fastload.loadmodel(model, arrays, casting="safe")
    assert "float64" in str(info.value) and "weight" in str(info.value)


@pytest.mark.parametrize("many_at_once", [True, False])
def test_autograd_sees_the_in_place_write(many_at_once, monkeypatch):
    # Older torch releases bump one tensor's version a call.
    from fastload import _torch

    if many_at_once and not _torch._BUMPS_MANY_AT_ONCE:
        pytest.skip("this torch bumps one tensor a call")
    monkeypatch.setattr(_torch, "_BUMPS_MANY_AT_ONCE", many_at_once)
    layer = nn.Linear(3, 1)
    out = (layer.weight**2).sum()  # saves the weight for backward
    versions = [layer.weight._version, layer.bias._version]
    fastload.loadmodel(layer, nn.Linear(3, 1))
    assert layer.weight._version > versions[0] and layer.bias._version > versions[1]
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        out.backward()


def test_autograd_sees_writes_that_torch_copies_too():
    param = nn.Parameter(torch.zeros(3, dtype=torch.complex64))
    version = param._version
    fastload.loadmodel({"w": param}, {"w": torch.ones(3, dtype=torch.complex64).conj()})
    assert param._version > version
    assert torch.equal(param.detach(), torch.ones(3, dtype=torch.complex64))


def test_autograd_sees_writes_of_a_copy_a_progress_error_stopped():
    param = nn.Parameter(torch.zeros(1 << 18))
    version = param._version

    def progress(done, total):
        if done == total:
            raise KeyError("stop")

    with pytest.raises(KeyError, match="stop"):
        fastload.loadmodel({"w": param}, {"w": torch.ones(1 << 18)}, progress=progress)
    assert param._version > version
    assert bool((param.detach() == 1).all())


def test_tensors_torch_copies_are_checked_like_the_rest():
    # A conjugate view has no NumPy view of its memory: torch copies it.
    z = torch.tensor([1 + 2j, 3 - 1j], dtype=torch.complex64)
    dst = {"a": torch.zeros(2, dtype=torch.complex64), "b": torch.zeros(3)}
    fastload.loadmodel(dst, {"a": z.conj(), "b": torch.ones(3)})
    assert torch.equal(dst["a"], z.conj().resolve_conj())
    before = {k: v.clone() for k, v in dst.items()}
    bad = {"a": torch.ones(3, dtype=torch.complex64).conj(), "b": torch.full((3,), 5.0)}
    with pytest.raises(DimensionMismatch) as info:
        fastload.loadmodel(dst, bad)
    assert "a: Tried to load size (3,) array into size (2,)" in str(info.value)
    for key in dst:
        assert torch.equal(dst[key], before[key])
    with pytest.raises(LoadError, match="cannot cast complex64 to float32"):
        fastload.loadmodel({"b": dst["b"]}, {"b": torch.ones(3, dtype=torch.complex64).conj()})


def test_meta_tensors_are_refused():
    with torch.device("meta"):
        model = nn.Linear(2, 2)
    with pytest.raises(LoadError, match="meta device"):
        fastload.loadmodel(model, nn.Linear(2, 2))


def _freed(tensor, nbytes=0):
    """``tensor`` with its storage freed (or shrunk to ``nbytes``), as FSDP frees a
    sharded parameter's."""
    tensor.untyped_storage().resize_(nbytes)
    return tensor


def _view_of_freed(base):
    view = base[1:5]
    _freed(base)
    return view


@pytest.mark.parametrize(
    "side, make",
    [
        ("source", lambda: _freed(torch.ones(4))),
        ("destination", lambda: _freed(torch.zeros(4))),
        # A view into a freed base starts past the null address: read as it is, a segfault.
        ("destination", lambda: _view_of_freed(torch.zeros(6))),
        ("source", lambda: _view_of_freed(torch.ones(6))),
        # Shrunk, not freed: the first elements are still there, the last are not.
        ("destination", lambda: _freed(torch.zeros(4), nbytes=8)),
    ],
    ids=["source", "destination", "view-destination", "view-source", "shrunk-destination"],
)
def test_tensors_whose_storage_was_freed_are_refused_and_nothing_is_written(side, make, tmp_path):
    freed = make()
    kept = torch.zeros(3)
    dst = {"a": kept, "b": freed if side == "destination" else torch.zeros(4)}
    src = {"a": torch.ones(3), "b": freed if side == "source" else torch.ones(4)}
    with pytest.raises(LoadError, match=f"b: the {side}'s storage holds (0|8) bytes, fewer"):
        fastload.loadmodel(dst, src)
    assert torch.equal(kept, torch.zeros(3))
    if side == "source":
        assert torch.equal(dst["b"], torch.zeros(4))
    with pytest.raises(TypeError, match="b: the tensor's storage holds"):
        fastload.save(tmp_path / "unused.safetensors", {"b": freed})


def test_packed_quantized_tensors_are_not_taken_for_freed_ones():
    # Two 4-bit elements a byte: five of them in three bytes, not five.
    packed = torch.quantize_per_tensor(torch.ones(5), 0.5, 0, torch.quint4x2)
    with pytest.raises(LoadError) as info:
        fastload.loadmodel(
            {"q": packed}, {"q": torch.quantize_per_tensor(torch.ones(5), 0.5, 0, torch.quint4x2)}
        )
    assert "freed" not in str(info.value)
    assert _torch.memory_refusal(packed) is None


def test_a_zero_tensor_destination_is_refused_and_a_zero_tensor_source_gives_zeros(tmp_path):
    zero = torch._efficientzerotensor(3)
    dst = {"a": torch.zeros(2), "b": zero}
    with pytest.raises(LoadError, match="b: the destination is a zero tensor"):
        fastload.loadmodel(dst, {"a": torch.ones(2), "b": torch.ones(3)})
    assert torch.equal(dst["a"], torch.zeros(2))
    dst = {"a": torch.ones(3)}
    fastload.loadmodel(dst, {"a": zero})
    assert torch.equal(dst["a"], torch.zeros(3))
    fastload.save(tmp_path / "zero.safetensors", {"a": zero})
    dst = {"a": torch.ones(3)}
    fastload.loadmodel(dst, tmp_path / "zero.safetensors")
    assert torch.equal(dst["a"], torch.zeros(3))


@pytest.mark.parametrize("unsigned", ["uint16", "uint32"])
def test_the_safe_rule_decides_unsigned_integers_torch_does_not_promote(unsigned):
    # Torch copies into a lazy parameter, and promotes no uint16/32/64 with other integers.
    if not hasattr(torch, "uint64"):
        pytest.skip("this torch has no uint16, uint32 or uint64")
    unsigned = getattr(torch, unsigned)
    dst = {"a": torch.zeros(2), "b": torch.nn.parameter.UninitializedBuffer(dtype=torch.int64)}
    src = {"a": torch.ones(2), "b": torch.full((3,), 7, dtype=unsigned)}
    fastload.loadmodel(dst, src, casting="safe")
    assert torch.equal(dst["b"], torch.full((3,), 7))
    dst = {"a": torch.zeros(2), "b": torch.nn.parameter.UninitializedBuffer(dtype=torch.int64)}
    src = {"a": torch.ones(2), "b": torch.ones(3, dtype=torch.uint64)}
    with pytest.raises(LoadError, match='b: cannot cast uint64 to int64 under casting="safe"'):
        fastload.loadmodel(dst, src, casting="safe")
    assert torch.equal(dst["a"], torch.zeros(2))
    assert _torch.is_lazy(dst["b"])


def test_a_conjugate_view_and_its_negative_are_not_one_tied_parameter():
    # Both are copied by torch, over the same memory read two ways: as with copy_ leaf by
    # leaf, each loads its own source, in walk order.
    x = torch.zeros(3, dtype=torch.complex64)
    dst = {"a": x.conj(), "b": x.conj()._neg_view()}
    s = torch.tensor([1 + 2j, 3 + 4j, 5 + 6j])
    fastload.loadmodel(dst, {"a": s, "b": s})
    assert torch.equal(dst["b"].resolve_neg().resolve_conj(), s)


def test_a_scheme_torch_does_not_quantize_float32_into_is_refused_before_anything_is_written():
    # Float zero points make the scheme of quantized embeddings, which copy_ refuses.
    scales, zero_points = torch.tensor([0.1, 0.2, 0.3]), torch.zeros(3)
    q = torch.quantize_per_channel(torch.randn(3, 4), scales, zero_points, 0, torch.quint8)
    assert q.qscheme() == torch.per_channel_affine_float_qparams
    dst = {"a": torch.zeros(2), "q": q}
    refusal = "q: torch does not quantize float32 into a tensor quantized per_channel_affine_float"
    with pytest.raises(LoadError, match=refusal):
        fastload.loadmodel(dst, {"a": torch.ones(2), "q": torch.randn(3, 4)})
    assert torch.equal(dst["a"], torch.zeros(2))


def test_a_flat_source_lists_every_node_of_the_model_that_cannot_be_walked(tmp_path):
    class Packed(nn.Linear):  # as quantized modules do: a state_dict of its own layout
        def _save_to_state_dict(self, destination, prefix, keep_vars):
            destination[prefix + "packed"] = torch.zeros(1)

    dst = nn.ModuleDict({"a": nn.Linear(2, 2), "fc": Packed(2, 2), "fc2": Packed(2, 2)})
    fastload.save(tmp_path / "a.safetensors", {"a": nn.Linear(2, 2)})
    for src in (dst.state_dict(), tmp_path / "a.safetensors"):
        with pytest.raises(ArgumentError) as info:
            fastload.loadmodel(dst, src)
        assert str(info.value).startswith("2 problems; nothing was loaded:")
        assert [path for path, _ in info.value.problems] == ["fc", "fc2"]


def test_a_state_dict_saves_as_it_is_and_loads_back_into_a_model(tmp_path):
    """A flat ``state_dict``'s dotted keys are its paths: the file holds them as they are
    (a tied weight once), as a save of the model itself would."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3), nn.Linear(3, 3))
    model[2].weight = model[0].weight
    path = tmp_path / "sd.safetensors"
    fastload.save(path, model.state_dict())
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        stored = set(f.keys())
    assert len(stored & {"0.weight", "2.weight"}) == 1  # the tie, stored once
    assert stored | {"0.weight", "2.weight"} == set(model.state_dict())
    ours = tmp_path / "model.safetensors"
    fastload.save(ours, model)
    assert fastload.load(path).keys() == fastload.load(ours).keys()
    torch.manual_seed(1)
    other = nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3), nn.Linear(3, 3))
    other[2].weight = other[0].weight
    fastload.loadmodel(other, path)
    assert_same_state(other, model)


def test_storages_stay_resizable_after_a_load_or_a_save(tmp_path):
    # FSDP frees parameters with resize_(0); observers resize their empty buffers.
    empty, weight, source = torch.zeros(0), torch.zeros(3), torch.ones(3)
    fastload.loadmodel({"e": empty, "w": weight}, {"e": torch.zeros(0), "w": source})
    fastload.save(tmp_path / "m.safetensors", {"w": weight, "s": source})
    empty.resize_(5)
    for tensor in (weight, source):
        tensor.untyped_storage().resize_(0)
        assert tensor.untyped_storage().nbytes() == 0


def test_an_observer_loaded_from_an_uncalibrated_one_can_still_be_calibrated():
    observer = torch.ao.quantization.PerChannelMinMaxObserver(ch_axis=0)
    fastload.loadmodel(observer, torch.ao.quantization.PerChannelMinMaxObserver(ch_axis=0))
    observer(torch.randn(4, 3))  # resizes its empty min_val and max_val
    assert observer.min_val.shape == (4,)


def _nested(layout, values):
    if layout == "jagged":
        if not hasattr(torch, "jagged"):
            pytest.skip("this torch has no jagged nested tensors")
        return torch.nested.nested_tensor([values[:2], values[2:]], layout=torch.jagged)
    return torch.nested.nested_tensor([values[:2], values[2:]])


def test_saving_bfloat16_without_ml_dtypes_says_the_package_is_needed(tmp_path, monkeypatch):
    """NumPy holds bfloat16 only through ml_dtypes (installed with fastload[torch])."""
    monkeypatch.setattr(_torch, "ml_dtypes", None)
    for table in ("_ML", "VIEW_DTYPES"):
        reduced = {k: v for k, v in getattr(_torch, table).items() if k != torch.bfloat16}
        monkeypatch.setattr(_torch, table, reduced)
    path = tmp_path / "m.safetensors"
    with pytest.raises(TypeError, match="^w: saving a torch.bfloat16 tensor needs the ml_dtypes"):
        fastload.save(path, {"w": torch.ones(2, dtype=torch.bfloat16)})
    assert not path.exists()


@pytest.mark.parametrize("layout", ["strided", "jagged"])
def test_nested_tensors_are_refused_with_a_load_error_and_by_save(layout, tmp_path):
    dst, src = _nested(layout, torch.zeros(5)), _nested(layout, torch.arange(5.0))
    kept = torch.zeros(2)
    for a, b in ((dst, src), (dst, torch.ones(2)), (torch.ones(2), src)):
        with pytest.raises(LoadError, match="a: nested tensors .* are not loaded"):
            fastload.loadmodel({"k": kept, "a": a}, {"k": torch.ones(2), "a": b})
    assert torch.equal(kept, torch.zeros(2))
    assert all(torch.equal(t, torch.zeros(len(t))) for t in dst.unbind())
    with pytest.raises(TypeError, match="a: a nested tensor cannot be saved"):
        fastload.save(tmp_path / "n.safetensors", {"a": dst})


_DTENSOR_LOADS = """
import os, torch, torch.nn as nn, torch.distributed as dist, fastload
os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=os.environ["PORT"])
dist.init_process_group("gloo", rank=0, world_size=1)
from torch.distributed.tensor import DeviceMesh, Shard, distribute_tensor
mesh = DeviceMesh("cpu", [0])
def model(seed, sharded=True):
    torch.manual_seed(seed)
    m = nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 3))
    if sharded:
        m[1].weight = nn.Parameter(distribute_tensor(m[1].weight.detach(), mesh, [Shard(0)]))
    return m
def refused(dst, src, message):
    try:
        fastload.loadmodel(dst, src)
    except fastload.LoadError as err:
        assert message in str(err), err
    else:
        raise AssertionError("loaded: " + message)
dst, src = model(0), model(1)
fastload.loadmodel(dst, src)
assert torch.equal(dst[1].weight.full_tensor(), src[1].weight.full_tensor())
for dst, src in ((model(2), model(3, sharded=False)), (model(4, sharded=False), model(5))):
    before = dst[0].weight.detach().clone()
    refused(dst, src, "1.weight: torch copies between a DTensor and a plain tensor")
    assert torch.equal(dst[0].weight, before)
# A source without a bias fills a DTensor bias with zeros, as any other.
dst = nn.Linear(3, 4)
dst.bias = nn.Parameter(distribute_tensor(torch.ones(4), mesh, [Shard(0)]))
fastload.loadmodel(dst, nn.Linear(3, 4, bias=False))
assert not dst.bias.full_tensor().any()
# A DTensor of another mesh is refused during the walk, before any leaf is written.
other = DeviceMesh("cpu", [[0]], mesh_dim_names=("a", "b"))
before, version = dst.weight.detach().clone(), dst.weight._version
bias = distribute_tensor(torch.ones(4), other, [Shard(0), Shard(0)])
src = {"weight": torch.zeros(4, 3), "bias": bias}
refused(dst, src, "bias: the source DTensor is on another device mesh")
assert torch.equal(dst.weight, before) and dst.weight._version == version
dist.destroy_process_group()
print("ok")
"""


def test_a_dtensor_loads_from_a_dtensor_and_is_refused_against_a_plain_tensor():
    if not torch.distributed.is_available():
        pytest.skip("torch.distributed is not built")
    try:
        from torch.distributed.tensor import DeviceMesh, distribute_tensor  # noqa: F401
    except ImportError:
        pytest.skip("this torch has no public DTensor")
    port = str(29500 + (os.getpid() % 500))
    env = {**os.environ, "PORT": port}
    done = subprocess.run(
        [sys.executable, "-c", _DTENSOR_LOADS], capture_output=True, text=True, env=env, timeout=300
    )
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


def test_lazy_modules_take_the_shape_of_their_source_like_load_state_dict(tmp_path):
    src = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    ours = nn.Sequential(nn.LazyLinear(3), nn.ReLU(), nn.LazyLinear(2))
    theirs = nn.Sequential(nn.LazyLinear(3), nn.ReLU(), nn.LazyLinear(2))
    weight = ours[0].weight
    theirs.load_state_dict(src.state_dict())
    fastload.loadmodel(ours, src.state_dict())
    assert ours[0].weight is weight and type(weight) is nn.Parameter
    assert_same_state(ours, theirs)
    assert_same_state(ours, src)
    x = torch.randn(5, 4)
    assert torch.equal(ours(x), src(x))
    # From a file, cast from float64 as torch casts.
    path = tmp_path / "m.safetensors"
    fastload.save(path, src.double())
    lazy = nn.Sequential(nn.LazyLinear(3), nn.ReLU(), nn.LazyLinear(2))
    fastload.loadmodel(lazy, path)
    assert lazy[2].bias.dtype == torch.float32
    assert torch.equal(lazy[2].bias, src[2].bias.float())


def test_lazy_modules_are_untouched_by_a_refused_load():
    src = {"0": {"weight": torch.ones(3, 4), "bias": torch.ones(3)}, "1": {"weight": 1}}
    dst = nn.Sequential(nn.LazyLinear(3), nn.Linear(2, 2))
    with pytest.raises(LoadError) as info:
        fastload.loadmodel(dst, src)
    assert "1.weight" in str(info.value)
    assert nn.parameter.is_lazy(dst[0].weight) and nn.parameter.is_lazy(dst[0].bias)
    with pytest.raises(LoadError, match="0.weight: an uninitialized parameter .* no shape"):
        fastload.loadmodel(nn.Sequential(nn.LazyLinear(3)), {"0": {"weight": False, "bias": False}})
    with pytest.raises(LoadError, match="0.bias: the source is the uninitialized parameter"):
        fastload.loadmodel(nn.Sequential(nn.Linear(2, 3)), nn.Sequential(nn.LazyLinear(3)))
    complex_src = {"weight": torch.ones(3, 2, dtype=torch.complex64), "bias": torch.ones(3)}
    with pytest.raises(LoadError, match="weight: cannot cast complex64 to float32"):
        fastload.loadmodel(nn.LazyLinear(3), complex_src)
    with torch.device("meta"):
        on_meta = nn.LazyLinear(3)
    with pytest.raises(LoadError, match="weight: a tensor on the meta device"):
        fastload.loadmodel(on_meta, nn.Linear(2, 3).state_dict())
    assert nn.parameter.is_lazy(dst[0].weight)


def test_saving_a_lazy_module_names_the_uninitialized_parameter(tmp_path):
    path = tmp_path / "lazy.safetensors"
    with pytest.raises(TypeError, match="0.weight: an uninitialized parameter"):
        fastload.save(path, nn.Sequential(nn.LazyLinear(3)))
    assert not path.exists()


def test_extra_state_in_a_state_dict_is_an_unexpected_key_of_its_module():
    class Tagged(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(2, 2)

        def get_extra_state(self):
            return {"tag": 1}

        def set_extra_state(self, state):
            pass

    src = nn.Sequential(Tagged()).state_dict()
    assert "0._extra_state" in src
    dst = nn.Sequential(Tagged())
    before = dst[0].lin.weight.detach().clone()
    with pytest.raises(ArgumentError, match=r"0: .*unexpected keys \['_extra_state'\]"):
        fastload.loadmodel(dst, src)
    assert torch.equal(dst[0].lin.weight, before)
    with pytest.warns(fastload.SkippedKeysWarning, match="0: unexpected \\['_extra_state'\\]"):
        fastload.loadmodel(dst, src, strict=False)
    assert torch.equal(dst[0].lin.weight, src["0.lin.weight"])


def test_modules_that_write_their_own_state_dict_layout_are_refused_unless_registered():
    class Scaled(nn.Module):  # as quantized modules do: state outside parameters and buffers
        def __init__(self, scale):
            super().__init__()
            self.lin, self.scale = nn.Linear(2, 2), scale

        def _save_to_state_dict(self, destination, prefix, keep_vars):
            super()._save_to_state_dict(destination, prefix, keep_vars)
            destination[prefix + "scale"] = torch.tensor(self.scale)

    class Observer(nn.Module):  # as fake quantizers do: saves exactly its buffers, again
        def __init__(self, scale):
            super().__init__()
            self.register_buffer("scale", torch.tensor([scale]))

        def _save_to_state_dict(self, destination, prefix, keep_vars):
            super()._save_to_state_dict(destination, prefix, keep_vars)
            destination[prefix + "scale"] = self.scale

    dst = nn.Sequential(Scaled(1.0), Observer(1.0))
    before = snapshot(dst)
    refusal = "0: cannot walk this node: TypeError: Scaled saves a state_dict of its own layout"
    with pytest.raises(ArgumentError, match=refusal):
        fastload.loadmodel(dst, nn.Sequential(Scaled(2.0), Observer(2.0)))
    with pytest.raises(ArgumentError, match=refusal):
        fastload.loadmodel(dst, nn.Sequential(Scaled(2.0), Observer(2.0)).state_dict())
    with pytest.raises(ArgumentError, match=refusal):
        fastload.state(dst)
    assert_equal_snapshot(dst, before)
    observer = Observer(1.0)
    fastload.loadmodel(observer, Observer(3.0).state_dict())
    assert observer.scale.tolist() == [3.0]
    try:
        fastload.register(Scaled, lambda m: {"lin": m.lin})
        src = nn.Sequential(Scaled(2.0), Observer(2.0))
        fastload.loadmodel(dst, src)
        assert torch.equal(dst[0].lin.weight, src[0].lin.weight)
    finally:
        _tree._children_fns.pop(Scaled, None)


def test_many_small_modules():
    dst = nn.ModuleList([nn.Linear(2, 2) for _ in range(500)])
    src = nn.ModuleList([nn.Linear(2, 2) for _ in range(500)])
    fastload.loadmodel(dst, src.state_dict())
    assert_same_state(dst, src)


def test_import_fastload_does_not_import_torch():
    code = (
        "import sys, numpy as np, fastload\n"
        "fastload.loadmodel({'a': np.zeros(2)}, {'a': np.ones(2)})\n"
        "fastload.state({'a': np.zeros(2)})\n"
        "assert 'torch' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_flatten_and_unflatten():
    tree = {"h": [{"w": 1, "b": 2}, {"w": 3, "b": 4}], "ln": {"g": 5}, "act": np.tanh}
    flat = fastload.flatten(tree)
    assert flat == {"h.0.w": 1, "h.0.b": 2, "h.1.w": 3, "h.1.b": 4, "ln.g": 5}
    nested = fastload.unflatten(flat)
    assert nested == {"h": {"0": {"w": 1, "b": 2}, "1": {"w": 3, "b": 4}}, "ln": {"g": 5}}
    assert fastload.unflatten({"a/b": 1}, sep="/") == {"a": {"b": 1}}
    with pytest.raises(ValueError, match="'a.b'"):
        fastload.unflatten({"a": 1, "a.b": 2})
    with pytest.raises(ValueError, match="'a'"):
        fastload.unflatten({"a.b": 2, "a": 1})
    with pytest.raises(ValueError, match="empty part"):
        fastload.unflatten({"a..b": 1})
    with pytest.raises(TypeError):
        fastload.unflatten({1: 2})
    with pytest.raises(ValueError, match="separator"):
        fastload.flatten({"a.b": 1})


def raw(t):
    """What a tensor holds, bit for bit: its whole memory, and a quantized tensor's
    quantizer, a sparse tensor's indices and values."""
    t = t.detach()
    if t.layout == torch.sparse_coo:
        return ("coo", t.sparse_dim(), raw(t._indices()), raw(t._values()))
    if t.layout in (torch.sparse_csr, torch.sparse_bsr):
        return (str(t.layout), raw(t.crow_indices()), raw(t.col_indices()), raw(t.values()))
    if t.is_quantized:
        if t.qscheme() == torch.per_tensor_affine:
            quantizer = (t.q_scale(), t.q_zero_point())
        else:
            quantizer = (raw(t.q_per_channel_scales()), raw(t.q_per_channel_zero_points()))
        return ("quantized", t.dtype, t.qscheme(), quantizer, raw(t.int_repr()))
    layout = (t.dtype, tuple(t.shape), t.stride(), t.storage_offset())
    return ("strided", layout, bytes(t.untyped_storage()))


class Holder(nn.Module):
    """A module whose leaf ``s`` comes after ``a`` (copied by the core) and ``b`` (copied
    by torch, from a conjugate view), which a load writes first."""

    def __init__(self, s):
        super().__init__()
        self.a = nn.Parameter(torch.zeros(2))
        self.register_buffer("b", torch.zeros(2, dtype=torch.complex64))
        self.register_buffer("s", s)


def holder_source(s):
    return {"a": torch.ones(2), "b": torch.tensor([1 + 2j, 3j]).conj(), "s": s}


def assert_refused_untouched(dst, src, message):
    """Loading ``src`` into ``dst`` raises fastload's ``LoadError`` for ``s`` alone, and
    leaves every leaf of ``dst`` as it was, bit for bit."""
    before = {k: raw(v) for k, v in dst.state_dict().items()}
    with pytest.raises(LoadError) as info:
        fastload.loadmodel(dst, src)
    assert [path for path, _ in info.value.problems] == ["s"]
    assert re.search(message, info.value.problems[0][1]), info.value.problems
    assert "s: " in str(info.value)
    assert {k: raw(v) for k, v in dst.state_dict().items()} == before


def quantized(values, scale, zero_point, dtype=torch.qint8):
    with warnings.catch_warnings():  # torch deprecates quantized tensors in its core
        warnings.simplefilter("ignore", UserWarning)
        return torch.quantize_per_tensor(torch.tensor(values), scale, zero_point, dtype)


def per_channel(values, scales, zero_points, axis=0):
    scales, zero_points = torch.tensor(scales, dtype=torch.float64), torch.tensor(zero_points)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return torch.quantize_per_channel(
            torch.tensor(values), scales, zero_points, axis, torch.qint8
        )


def test_quantized_tensors_take_their_sources_scale_and_zero_point_like_load_state_dict():
    class Quantized(nn.Module):
        def __init__(self, seed):
            super().__init__()
            self.lin = nn.Linear(2, 2)
            values = [float(seed + i) for i in range(4)]
            self.register_buffer("q", quantized(values, 0.5 / (seed + 1), seed, torch.quint8))
            rows = [[float(seed)] * 3, [-1.0, 0.5, 2.0]]
            self.register_buffer("pc", per_channel(rows, [0.1 * (seed + 1), 0.3], [seed, 0]))

    for feed in (lambda m: m, lambda m: m.state_dict()):
        dst, src, expected = Quantized(0), Quantized(1), Quantized(0)
        buffers = dst.q, dst.pc
        expected.load_state_dict(src.state_dict())
        assert raw(expected.q) == raw(src.q)  # load_state_dict takes the source's quantizer
        fastload.loadmodel(dst, feed(src))
        assert (dst.q, dst.pc) == buffers  # the same tensors, written in place
        for name in ("q", "pc"):
            assert raw(getattr(dst, name)) == raw(getattr(expected, name)), name
        assert dst.q.q_scale() == src.q.q_scale() and dst.q.q_zero_point() == 1
        assert torch.equal(dst.pc.q_per_channel_scales(), src.pc.q_per_channel_scales())
    # A plain quantized tensor as the root, and float32 into one: quantized with its own
    # scale and zero point, as torch's copy does.
    q = quantized([0.0, 0.0, 0.0], 1.0, 0)
    fastload.loadmodel(q, quantized([1.0, 2.0, 3.0], 0.25, 3))
    assert (q.int_repr().tolist(), q.q_scale(), q.q_zero_point()) == ([7, 11, 15], 0.25, 3)
    expected = quantized([0.0, 0.0, 0.0], 0.5, 1)
    q = quantized([0.0, 0.0, 0.0], 0.5, 1)
    fastload.loadmodel(q, torch.tensor([1.0, -1.0, 3.0]))
    expected.copy_(torch.tensor([1.0, -1.0, 3.0]))
    assert raw(q) == raw(expected) and q.int_repr().tolist() == [3, -1, 7]
    fastload.loadmodel(q, False)
    assert q.dequantize().tolist() == [0.0, 0.0, 0.0]
    with pytest.raises(LoadError, match='cannot cast float32 to qint8 under casting="safe"'):
        fastload.loadmodel(q, torch.ones(3), casting="safe")


def test_tied_quantized_tensors_must_get_the_same_values_and_quantizer():
    q = quantized([0.0, 0.0], 1.0, 0)
    same = {"x": quantized([1.0, 2.0], 0.5, 2), "y": quantized([1.0, 2.0], 0.5, 2)}
    fastload.loadmodel({"x": q, "y": q}, same)
    assert raw(q) == raw(quantized([1.0, 2.0], 0.5, 2))
    before = raw(q)
    other_scale = {"x": quantized([1.0, 2.0], 0.5, 2), "y": quantized([1.0, 2.0], 0.25, 2)}
    with pytest.raises(LoadError, match="y: tied destination parameters with untied"):
        fastload.loadmodel({"x": q, "y": q}, other_scale)
    assert raw(q) == before


def test_quantized_modules_that_pack_their_weights_are_refused_with_their_path():
    nnq = pytest.importorskip("torch.ao.nn.quantized")
    dst = nn.Sequential(nn.Linear(4, 4), nnq.Linear(4, 3))
    before = {k: raw(v) for k, v in dst[0].state_dict().items()}
    with pytest.raises(ArgumentError, match="1: cannot walk this node: .*saves a state_dict"):
        fastload.loadmodel(dst, nn.Sequential(nn.Linear(4, 4), nnq.Linear(4, 3)))
    assert {k: raw(v) for k, v in dst[0].state_dict().items()} == before


def _copies_torch_refuses():
    """Makers of ``(dst, src, what fastload says)`` for pairs of tensors whose copy torch
    refuses, each raising at ``copy_``."""
    ones = torch.ones(3, 3)
    square = [[0.0, 1.0], [2.0, 3.0]]
    cases = {
        "csr_with_other_nnz": lambda: (
            torch.eye(3).to_sparse_csr(),
            ones.to_sparse_csr(),
            "sparse_csr tensor of 9 specified elements into one of 3",
        ),
        "bsr_with_other_blocks": lambda: (
            torch.ones(4, 4).to_sparse_bsr((2, 2)),
            torch.eye(4).to_sparse_bsr((1, 1)),
            r"values have shape \(4, 1, 1\) into one whose values have shape \(4, 2, 2\)",
        ),
        "coo_with_other_sparse_dims": lambda: (
            ones.to_sparse(1),
            ones.to_sparse(2),
            "sparse_coo tensor of 2 sparse and 0 dense dimensions into one of 1 and 1",
        ),
        "qint8_from_quint8": lambda: (
            quantized([0.0, 1.0], 1.0, 0),
            quantized([0.0, 1.0], 1.0, 0, torch.quint8),
            "quantized quint8 tensor into a quantized qint8 one",
        ),
        "float32_from_qint8": lambda: (
            torch.zeros(2),
            quantized([0.0, 1.0], 1.0, 0),
            r"quantized qint8 tensor into a float32 one; dequantize\(\) it first",
        ),
        "qint8_from_float64": lambda: (
            quantized([0.0, 1.0], 1.0, 0),
            torch.ones(2, dtype=torch.float64),
            "loads only from one of its dtype or from float32, not from float64",
        ),
        "per_tensor_from_per_channel": lambda: (
            quantized(square, 1.0, 0),
            per_channel(square, [0.1, 0.2], [0, 0]),
            "quantized per_channel_affine into one quantized per_tensor_affine",
        ),
        "quint4x2_from_quint4x2": lambda: (
            quantized([0.0, 1.0], 1.0, 0, torch.quint4x2),
            quantized([2.0, 1.0], 1.0, 0, torch.quint4x2),
            "torch cannot copy quint4x2 into quint4x2",
        ),
        "transposed_qint8_from_float32": lambda: (
            quantized(square, 1.0, 0).t(),
            torch.ones(2, 2),
            "torch quantizes float32 only into a contiguous quantized tensor",
        ),
    }
    for name in EXOTIC_DTYPES:
        cases[f"float32_from_{name}"] = lambda name=name: (
            torch.zeros(2),
            exotic_zeros(name),
            f"torch cannot copy {name} into float32",
        )
        cases[f"{name}_from_float32"] = lambda name=name: (
            exotic_zeros(name),
            torch.ones(2),
            f"torch cannot copy float32 into {name}",
        )
    return cases


# One-byte dtypes that torch copies only into themselves.
EXOTIC_DTYPES = [name for name in ("float4_e2m1fn_x2", "bits8") if hasattr(torch, name)]


def exotic_zeros(name):
    return torch.zeros(2, dtype=torch.uint8).view(getattr(torch, name))


@pytest.mark.filterwarnings("ignore:Sparse .* tensor support is in beta")
@pytest.mark.parametrize("case", sorted(_copies_torch_refuses()))
def test_copies_torch_refuses_are_refused_before_anything_is_written(case):
    dst, src, message = _copies_torch_refuses()[case]()
    assert_refused_untouched(Holder(dst), holder_source(src), message)


@pytest.mark.parametrize("name", EXOTIC_DTYPES)
def test_exotic_dtypes_still_load_into_their_own_dtype(name):
    dst = exotic_zeros(name)
    src = torch.tensor([3, 7], dtype=torch.uint8).view(getattr(torch, name))
    try:
        exotic_zeros(name).copy_(src)
    except RuntimeError:  # not in this torch release: refused before anything is written
        with pytest.raises(LoadError, match=f"w: torch cannot copy {name} into {name}"):
            fastload.loadmodel({"w": dst}, {"w": src})
        assert dst.view(torch.uint8).tolist() == [0, 0]
        return
    fastload.loadmodel({"w": dst}, {"w": src})
    assert dst.view(torch.uint8).tolist() == [3, 7]


@pytest.mark.skipif(not hasattr(torch, "uint1"), reason="torch has no uint1")
def test_zeros_into_a_dtype_torch_cannot_copy_are_refused_before_anything_is_written():
    # False zeroes its destination; torch has no copy into uint1 at all.
    assert_refused_untouched(
        Holder(torch.zeros(3, dtype=torch.uint1)),
        holder_source(False),
        "torch cannot copy uint1 into uint1",
    )


OVERLAP = "the destination's elements share memory"


@pytest.mark.parametrize(
    "make",
    [
        lambda: torch.zeros(1).expand(4),  # a zero stride, viewed by the core
        lambda: torch.zeros(1, dtype=torch.complex64).expand(4).conj(),  # copied by torch
        lambda: torch.zeros(1, 3).expand(2, 3).t(),
        lambda: torch.zeros(5).as_strided((3, 2), (1, 1)),  # overlapping strides
    ],
    ids=["expand", "conjugate_expand", "transposed_expand", "as_strided"],
)
def test_self_overlapping_destinations_are_refused_like_load_state_dict(make):
    src = torch.arange(float(make().numel())).reshape(make().shape)
    if 0 in make().stride():  # torch finds only zero strides, and lets others write twice
        with pytest.raises(RuntimeError, match="single memory location"):
            Holder(make()).load_state_dict(holder_source(src))
    assert_refused_untouched(Holder(make()), holder_source(src), OVERLAP)


def test_self_overlapping_numpy_destinations_keep_numpys_rule_unless_torch_copies():
    as_strided = np.lib.stride_tricks.as_strided
    dst = as_strided(np.zeros(1, dtype=np.complex64), (4,), (0,))
    fastload.loadmodel(dst, np.arange(4, dtype=np.complex64))  # element by element
    assert dst.tolist() == [3, 3, 3, 3]
    earlier = np.zeros(2)
    half = complex_half([1j, 2j, 3j, 4j])  # torch copies it, and refuses to copy into `dst`
    with pytest.raises(LoadError) as info:
        fastload.loadmodel({"a": earlier, "s": dst}, {"a": np.ones(2), "s": half})
    assert info.value.problems == [("s", info.value.problems[0][1])]
    assert OVERLAP in info.value.problems[0][1]
    assert earlier.tolist() == [0, 0] and dst.tolist() == [3, 3, 3, 3]


def complex_half(values) -> torch.Tensor:
    """A complex32 tensor, which NumPy has no dtype for: torch copies it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # (complex32 is experimental)
        return torch.tensor(values, dtype=torch.complex64).to(torch.complex32)


class CopyRefused(torch.Tensor):
    """A tensor subclass whose ``copy_`` raises: a failure no check can foresee."""

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        if func is torch.Tensor.copy_:
            raise RuntimeError("this tensor refuses copy_")
        return super().__torch_function__(func, types, args, kwargs or {})


def test_a_copy_torch_fails_after_the_checks_names_its_leaf_and_counts_what_was_written():
    """The leaves copied before it stay written, so autograd must hear of them."""
    plain = torch.zeros(3)
    refusing = complex_half([0, 0]).as_subclass(CopyRefused)
    version = plain._version
    src = {"plain": torch.ones(3), "refusing": complex_half([1, 2])}
    message = "^refusing: torch's copy failed .* stay written: RuntimeError: this tensor refuses"
    with pytest.raises(RuntimeError, match=message) as info:
        fastload.loadmodel({"plain": plain, "refusing": refusing}, src)
    assert not isinstance(info.value, LoadError)  # (which promises nothing was written)
    assert plain.tolist() == [1.0, 1.0, 1.0] and plain._version > version


def test_a_failure_staging_copies_names_the_step_and_counts_what_was_written(monkeypatch):
    """Staging copies many leaves at once (a pinned buffer torch cannot allocate): no one
    leaf is at fault, so the message names the step."""

    def staging_fails(copies, threads):
        raise RuntimeError("no pinned memory left")

    monkeypatch.setattr(fastload._staging, "run", staging_fails)
    plain, later = torch.zeros(3), torch.zeros(2, dtype=torch.complex32)
    version = plain._version
    src = {"plain": torch.ones(3), "later": complex_half([1, 2])}
    message = "^the pinned staging of large copies .* RuntimeError: no pinned memory left"
    with pytest.raises(RuntimeError, match=message):
        fastload.loadmodel({"plain": plain, "later": later}, src)
    assert plain.tolist() == [1.0, 1.0, 1.0] and plain._version > version


@pytest.mark.parametrize("torch_first", [True, False])
def test_a_tie_with_sources_torch_copies_and_others_is_checked_as_any_tie(torch_first):
    """complex32 has no NumPy dtype, so torch copies it, after the others: the sources of
    the tied parameter are still compared before anything is written."""
    p = torch.zeros(3, dtype=torch.complex64)
    version = p._version
    by_torch = complex_half([1 + 1j] * 3)
    by_core = torch.full((3,), 5 + 5j, dtype=torch.complex64)
    src = [by_torch, by_core] if torch_first else [by_core, by_torch]
    with pytest.raises(LoadError, match="tied destination parameters with untied and mismatch"):
        fastload.loadmodel([p, p], src)
    assert not p.any() and p._version == version
    # The same value, or False for zeros, loads.
    same = [by_torch, by_core - 4 - 4j] if torch_first else [by_core - 4 - 4j, by_torch]
    fastload.loadmodel([p, p], same)
    assert (p == 1 + 1j).all()
    fastload.loadmodel([p, p], [complex_half([0, 0, 0]), False])
    assert not p.any()
    # Listed in walk order with the walk's own problems: the first gives the class.
    with pytest.raises(LoadError) as info:
        fastload.loadmodel([p, p, torch.zeros(2)], src + [torch.ones(5)])
    paths = [path for path, _ in info.value.problems]  # (the tie by its leaf torch copies)
    assert type(info.value) is LoadError and paths == ["0" if torch_first else "1", "2"]


@pytest.mark.parametrize("torch_first", [True, False])
def test_memory_torch_copies_into_and_the_core_writes_viewed_otherwise_is_refused(torch_first):
    """Torch's copies are made last: memory both write, viewed as another dtype, would
    not be written in walk order."""
    z = torch.zeros(3, dtype=torch.complex64)
    pairs = [(z, complex_half([1, 2, 3])), (z.view(torch.float64), torch.arange(3.0).double())]
    dst, src = zip(*(pairs if torch_first else pairs[::-1]))
    with pytest.raises(LoadError, match="is memory another leaf of the load writes as another"):
        fastload.loadmodel(list(dst), list(src))
    assert not z.any()


def test_a_mixed_tie_compares_the_value_the_core_writes():
    """The core saturates a float out of an integer's range, where torch wraps it: the
    torch-copied source must give the core's value, not torch's cast of the other."""
    p = torch.zeros(3, dtype=torch.int8)
    by_core = np.array([300.0, 1.0, 2.0])  # the core writes 127 first
    saturated = torch.tensor([127, 1, 2], dtype=torch.int16).to(torch.complex32)
    fastload.loadmodel([p, p], [by_core, saturated], casting="unsafe")
    assert p.tolist() == [127, 1, 2]
    wrapped = torch.tensor([44, 1, 2], dtype=torch.int16).to(torch.complex32)  # torch's
    with pytest.raises(LoadError, match="untied and mismatched sources"):
        fastload.loadmodel([p, p], [by_core, wrapped], casting="unsafe")


@pytest.mark.parametrize("side", ["dst", "src"])
def test_a_tensor_subclass_whose_code_frees_a_planned_array_is_caught(side):
    """A subclass's `__torch_function__` runs whenever fastload asks the tensor anything:
    code of the user's, after which planned arrays are checked again."""
    victim = np.zeros(1 << 20)

    class Freeing(torch.Tensor):
        @classmethod
        def __torch_function__(cls, func, types, args=(), kwargs=None):
            victim.resize(1, refcheck=False)
            return super().__torch_function__(func, types, args, kwargs or {})

    dst = [victim, torch.zeros(3)]
    src = [np.ones(1 << 20), torch.ones(3)]
    holder = dst if side == "dst" else src
    holder[1] = holder[1].as_subclass(Freeing)
    with pytest.raises(LoadError, match="changed while the trees were walked"):
        fastload.loadmodel(dst, src)
    assert victim.shape == (1,) and not victim.any()


def test_a_complex_source_cast_into_a_real_tensor_warns_of_nothing():
    """A warning would run code of the user's (a `showwarning`, a logging handler) once
    the checks have passed, so torch is given the real part, which it keeps anyway."""
    dst = torch.zeros(3)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fastload.loadmodel([dst], [np.array([1 + 2j, 3, -4j])], casting="unsafe")
    assert dst.tolist() == [1.0, 3.0, 0.0] and not caught


def test_a_torch_function_mode_is_code_of_the_users():
    """A mode runs at every torch call the walk makes on a tensor: a change it makes is
    caught; and casts into tensors after the checks run none of it."""
    from torch.overrides import TorchFunctionMode

    victim = np.zeros(1 << 20)

    class Freeing(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            if victim.shape != (1,):
                victim.resize(1, refcheck=False)
            return func(*args, **(kwargs or {}))

    dst = {"v": victim, "a": torch.zeros(4, dtype=torch.float16)}
    src = {"v": np.ones(1 << 20), "a": np.arange(4.0)}  # float64 into float16: a cast
    with Freeing(), pytest.raises(LoadError, match="changed while the trees were walked"):
        fastload.loadmodel(dst, src)
    assert victim.shape == (1,) and not dst["a"].any()


def test_a_mixed_tie_into_numpy_memory_and_a_rounding_cast_loads():
    """The core's value is compared as the core casts into a tensor: float64 into
    float16 through float32, as torch rounds it."""
    a = np.zeros(3, np.complex64)
    fastload.loadmodel({"a": a, "b": a}, {"a": np.ones(3), "b": complex_half([1, 1, 1])})
    assert a.tolist() == [1, 1, 1]
    p = torch.zeros(1, dtype=torch.float16)
    x = 1 + 2**-11 + 2**-40  # NumPy rounds it up, torch (through float32) to 1.0
    fastload.loadmodel([p, p], [np.array([x]), complex_half([1.0])], casting="unsafe")
    assert p.tolist() == [1.0]


def test_conjugate_and_negative_views_on_the_cpu_are_tied_like_any_source():
    weight = np.zeros(3, np.complex64)
    values = torch.tensor([1 + 1j, 2 + 2j, 3 + 3j], dtype=torch.complex64)
    with pytest.raises(LoadError, match="b: tied destination parameters"):
        fastload.loadmodel({"a": weight, "b": weight}, {"a": values, "b": values.conj()})
    assert not weight.any()
    fastload.loadmodel({"a": weight, "b": weight}, {"a": values.conj(), "b": values.conj()})
    assert weight.tolist() == [1 - 1j, 2 - 2j, 3 - 3j]


@pytest.mark.parametrize("view", ["conj", "neg"])
def test_a_conjugate_view_of_memory_an_earlier_leaf_writes_is_refused(view):
    """Resolved during the walk, it would give the memory's old values, where leaf by
    leaf it reads what the earlier leaf wrote."""
    a, b = np.zeros(3, np.complex64), np.zeros(3, np.complex64)
    tensor = torch.from_numpy(a)
    values = tensor.conj() if view == "conj" else tensor._neg_view()
    src = {"a": torch.full((3,), 1 + 2j), "b": values}
    with pytest.raises(LoadError, match="b: this conjugate or negative view reads memory"):
        fastload.loadmodel({"a": a, "b": b}, src)
    assert not a.any() and not b.any()
    # Read before the leaf that writes it: resolved early, the value is the same.
    fastload.loadmodel({"b": b, "a": a}, {"b": values, "a": torch.full((3,), 1 + 2j)})
    assert not b.any() and a.tolist() == [1 + 2j] * 3


def test_views_whose_elements_do_not_share_memory_still_load():
    base = torch.zeros(6)
    view = base.as_strided((2, 3), (1, 2))  # a transposed layout: every element its own
    fastload.loadmodel({"w": view}, {"w": torch.arange(6.0).reshape(2, 3)})
    assert base.tolist() == [0.0, 3.0, 1.0, 4.0, 2.0, 5.0]
    single = torch.zeros(1).expand(1, 1)  # a zero stride over a single element
    fastload.loadmodel(single, torch.ones(1, 1))
    assert single.item() == 1.0


def test_inference_tensors_are_written_only_in_inference_mode_as_torch_allows():
    with torch.inference_mode():
        made = torch.zeros(3), torch.zeros(3, dtype=torch.complex64)
    src = torch.arange(3.0)
    with pytest.raises(RuntimeError, match="Inplace update to inference tensor"):
        Holder(made[0]).load_state_dict(holder_source(src))
    inference = "the destination is an inference tensor"
    assert_refused_untouched(Holder(made[0]), holder_source(src), inference)
    conj_src = torch.tensor([1j, 2j, 3j]).conj()  # copied by torch
    assert_refused_untouched(Holder(made[1]), holder_source(conj_src), inference)
    with torch.inference_mode():
        model = nn.Linear(3, 2)
        fastload.loadmodel(model, nn.Linear(3, 2).state_dict())
        fastload.loadmodel(made[0], src)
        fastload.loadmodel(made[1], conj_src)
    assert model.weight.is_inference()
    assert made[0].tolist() == [0.0, 1.0, 2.0]
    assert made[1].tolist() == [-1j, -2j, -3j]


@pytest.mark.parametrize("side", ["destination", "source"])
@pytest.mark.parametrize("change", ["resize", "new memory"])
def test_a_tensor_a_filter_changes_after_it_was_planned_is_refused(side, change):
    torch.manual_seed(0)
    model = nn.ModuleDict({"a": nn.Linear(64, 64), "b": nn.Linear(4, 4)})
    src = nn.ModuleDict({"a": nn.Linear(64, 64), "b": nn.Linear(4, 4)})
    changed = (model if side == "destination" else src)["a"].weight
    trigger = (model if side == "destination" else src)["b"].weight

    def moving_filter(child):
        if child is trigger:  # "a.weight" is planned by now
            if change == "resize":
                changed.data.resize_(200, 200)  # frees the memory planned
            else:
                changed.data = torch.zeros(64, 64)
        return True

    others = {k: v.clone() for k, v in model.state_dict().items() if k != "a.weight"}
    # (No write through the planned view, whose memory a resize frees.)
    with pytest.raises(LoadError, match="1 tensor.s. changed while the trees were walked"):
        fastload.loadmodel(model, src, filter=moving_filter)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in others.items())


def test_wrapper_tensors_without_memory_of_their_own_are_not_taken_for_ties():
    two_tensor = pytest.importorskip("torch.testing._internal.two_tensor")
    model = nn.Module()
    model.a = nn.Parameter(two_tensor.TwoTensor(torch.zeros(3), torch.zeros(3)))
    model.b = nn.Parameter(two_tensor.TwoTensor(torch.zeros(3), torch.zeros(3)))
    model.c = model.a  # a tie all the same
    fastload.loadmodel(model, {"a": torch.ones(3), "b": torch.full((3,), 2.0), "c": torch.ones(3)})
    assert model.a.a.tolist() == [1.0] * 3 and model.b.a.tolist() == [2.0] * 3
    with pytest.raises(LoadError, match="c"):
        fastload.loadmodel(model, {"a": torch.ones(3), "b": torch.ones(3), "c": torch.zeros(3)})
    assert model.a.a.tolist() == [1.0] * 3


def test_numpy_sources_torch_cannot_read_as_they_are_load_into_tensors_torch_copies():
    reversed_, swapped = np.arange(3, dtype=np.float32)[::-1], np.arange(3, dtype=">f4")
    quantized = torch.quantize_per_tensor(torch.zeros(3), 0.5, 0, torch.qint8)
    negative = torch.zeros(3, dtype=torch.complex64).conj().imag  # torch copies into it
    fastload.loadmodel({"q": quantized, "n": negative}, {"q": reversed_, "n": swapped})
    assert quantized.dequantize().tolist() == [2.0, 1.0, 0.0]
    assert negative.tolist() == [0.0, 1.0, 2.0]
    long_double = np.zeros(3, np.longdouble)
    with pytest.raises(LoadError, match="n: torch holds no"):
        fastload.loadmodel({"q": quantized, "n": negative}, {"q": reversed_, "n": long_double})
    assert negative.tolist() == [0.0, 1.0, 2.0]


@pytest.mark.parametrize("extra", ["0.weight.extra", "0", "0..weight"])
def test_a_flat_state_dict_key_that_is_no_path_is_an_argument_error_naming_it(extra):
    model = nn.Sequential(nn.Linear(2, 2))
    before = snapshot(model)
    flat = dict(nn.Sequential(nn.Linear(2, 2)).state_dict(), **{extra: torch.ones(1)})
    with pytest.raises(ArgumentError, match=re.escape(repr(extra))) as info:
        fastload.loadmodel(model, flat)
    assert info.value.problems[0][0] == "<root>"
    assert_equal_snapshot(model, before)


def test_a_sparse_parameter_under_two_names_is_one_tied_parameter():
    model = nn.Module()
    model.a, model.b = nn.Module(), nn.Module()
    model.a.w = nn.Parameter(torch.zeros(3, 3).to_sparse())
    model.b.w = model.a.w
    eye = torch.eye(3).to_sparse()
    with pytest.raises(LoadError, match="b.w: tied destination parameters"):
        fastload.loadmodel(model, {"a.w": eye, "b.w": (2 * torch.eye(3)).to_sparse()})
    assert not model.a.w.to_dense().any()
    fastload.loadmodel(model, {"a.w": eye, "b.w": torch.eye(3).to_sparse()})
    assert model.b.w is model.a.w and torch.equal(model.a.w.to_dense(), torch.eye(3))


@pytest.mark.parametrize(
    "make",
    [
        lambda t: t.to_sparse(),
        lambda t: t.to_sparse(1),  # one sparse dimension, one dense
        lambda t: t.to_sparse_csr(),
        lambda t: t.to_sparse_csc(),
    ],
    ids=["coo", "coo with a dense dimension", "csr", "csc"],
)
def test_false_fills_a_sparse_destination_with_zeros(make):
    dst = make(torch.tensor([[1.0, 0.0], [0.0, 2.0]]))
    layout = dst.layout
    fastload.loadmodel({"w": dst}, {"w": False})
    assert dst.layout == layout and not dst.to_dense().any()


def test_tensors_without_elements_load_when_the_walk_runs_code_of_the_users():
    dst = {"e": torch.zeros(4, 0), "w": torch.zeros(3)}
    fastload.loadmodel(dst, {"e": torch.ones(4, 0), "w": torch.ones(3)}, filter=lambda x: True)
    assert dst["w"].tolist() == [1.0] * 3
    model, src = nn.Linear(0, 4), nn.Linear(0, 4)
    fastload.loadmodel(model, src.state_dict(), filter=lambda x: True)
    assert torch.equal(model.bias, src.bias)


def test_a_wrapper_tensor_among_leaves_torch_copies_reserves_no_memory_of_others():
    two_tensor = pytest.importorskip("torch.testing._internal.two_tensor")
    unrelated, inner = np.zeros(4), []

    def progress(done, total):
        if not inner:  # a load into other memory, from inside this one
            inner.append(fastload.loadmodel(unrelated, np.ones(4)))

    wrapper = two_tensor.TwoTensor(torch.zeros(3), torch.zeros(3))
    big = np.zeros(1 << 20)
    fastload.loadmodel(
        {"w": wrapper, "b": big}, {"w": torch.ones(3), "b": np.ones(1 << 20)}, progress=progress
    )
    assert unrelated.tolist() == [1.0] * 4 and wrapper.a.tolist() == [1.0] * 3
