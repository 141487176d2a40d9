"""Checkpoint files: save, load, loadmodel from a path, sharding, interop, corrupt files."""

from __future__ import annotations

import errno
import json
import os
import re
import stat
import struct
import sys
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

import fastload
from fastload import ArgumentError, DimensionMismatch, LoadError


def model(seed: int = 0, fill: bool = True):
    rng = np.random.default_rng(seed)

    def array(*shape, dtype=np.float32):
        return rng.standard_normal(shape).astype(dtype) if fill else np.zeros(shape, dtype)

    tree = {
        "wte": array(10, 4),
        "h": [
            {"w": array(4, 4), "b": array(4), "act": "gelu", "bias": False},
            {"w": array(4, 4), "b": array(4), "act": "gelu", "bias": False},
        ],
        "ln": {"g": array(4, dtype=np.float16), "eps": 1e-5, "count": np.int64(7)},
        "act": np.tanh,
    }
    tree["head"] = {"weight": tree["wte"]}
    return tree


def test_save_and_load_round_trip(tmp_path):
    src = model(1)
    path = tmp_path / "model.safetensors"
    fastload.save(path, src, metadata={"author": "tests"})
    assert os.listdir(tmp_path) == ["model.safetensors"]
    back = fastload.load(path)
    assert np.array_equal(back["wte"], src["wte"])
    assert back["head"]["weight"] is back["wte"]  # the tie comes back as one array
    assert back["h"]["1"]["act"] == "gelu" and back["h"]["0"]["bias"] is False
    assert back["ln"]["eps"] == 1e-5 and back["ln"]["g"].dtype == np.float16
    assert back["ln"]["count"] == np.int64(7) and isinstance(back["ln"]["count"], np.int64)
    assert back["act"] == ()  # the state of a function
    assert not back["wte"].flags.writeable  # a view of the mapped file
    copied = fastload.load(path, copy=True)
    assert copied["wte"].flags.writeable and np.array_equal(copied["wte"], src["wte"])
    # The tied matrix is stored once.
    assert sorted(load_file(path)) == ["h.0.b", "h.0.w", "h.1.b", "h.1.w", "ln.g", "wte"]


def test_what_load_gives_back_loads_into_the_model_it_was_saved_from(tmp_path):
    src = {**model(1), "blocks": [], "config": {}, "nothing": ()}
    fastload.save(tmp_path / "model.safetensors", src)
    back = fastload.load(tmp_path / "model.safetensors")
    assert back["blocks"] == [] and back["config"] == {} and back["nothing"] == ()
    dst = {**model(0), "blocks": [], "config": {}, "nothing": ()}
    fastload.loadmodel(dst, back)
    assert np.array_equal(dst["h"][1]["w"], src["h"][1]["w"])


@pytest.mark.parametrize("key", [1, None, (1, 2)])
def test_keys_that_would_not_load_back_are_refused_by_save(tmp_path, key):
    tree = {"w": np.ones(2), "layers": {key: np.ones(1)}}
    with pytest.raises(TypeError, match=re.escape(f"key {key!r} is not a string")):
        fastload.save(tmp_path / "model.safetensors", tree)
    assert os.listdir(tmp_path) == []


def test_loadmodel_from_a_path_copies_straight_into_the_model(tmp_path):
    path = tmp_path / "model.safetensors"
    fastload.save(path, model(1))
    for where in (path, str(path)):
        dst = model(0, fill=False)
        assert fastload.loadmodel(dst, where) is dst
        expected = model(1)
        assert np.array_equal(dst["wte"], expected["wte"])
        assert np.array_equal(dst["h"][1]["w"], expected["h"][1]["w"])
        assert dst["head"]["weight"] is dst["wte"]
        assert dst["act"] is np.tanh  # a function is not in a file, and not missing


def test_a_file_missing_or_adding_arrays_is_refused_and_nothing_is_written(tmp_path, snapshot):
    full = {k: v for k, v in fastload.flatten(model(1)).items() if isinstance(v, np.ndarray)}
    missing = dict(full)
    del missing["h.1.b"]
    extra = dict(full, **{"h.1.scale": np.ones(4, np.float32)})
    shapes = dict(full, **{"h.1.b": np.ones(5, np.float32)})
    for name, arrays, error, text in (
        ("missing", missing, ArgumentError, "h.1: the structures do not match: missing keys ['b']"),
        ("extra", extra, ArgumentError, "unexpected keys ['scale']"),
        ("shape", shapes, DimensionMismatch, "h.1.b: Tried to load size (5,) array into size (4,)"),
    ):
        path = tmp_path / f"{name}.safetensors"
        save_file(arrays, str(path))
        dst = model(0)
        before = snapshot(dst)
        with pytest.raises(error) as info:
            fastload.loadmodel(dst, path)
        assert text in str(info.value)
        before.assert_unchanged()
    dst = model(0)
    with pytest.warns(fastload.SkippedKeysWarning) as record:
        fastload.loadmodel(dst, tmp_path / "missing.safetensors", strict=False)
    assert record[0].message.skipped == [("h.1", ["b"], [])]
    assert np.array_equal(dst["h"][0]["b"], full["h.0.b"])


def test_files_of_the_safetensors_package_load(tmp_path):
    arrays = {
        "a.w": np.arange(12, dtype=np.float32).reshape(3, 4),
        "a.b": np.arange(3, dtype=np.int64),
        "c": np.array([1.5, -2.0], dtype=ml_dtypes.bfloat16),
        "d": np.array([True, False]),
    }
    path = tmp_path / "theirs.safetensors"
    save_file(arrays, str(path))
    dst = {
        "a": {"w": np.zeros((3, 4), np.float32), "b": np.zeros(3, np.int64)},
        "c": np.zeros(2, ml_dtypes.bfloat16),
        "d": np.zeros(2, bool),
    }
    fastload.loadmodel(dst, path)
    assert np.array_equal(dst["a"]["w"], arrays["a.w"])
    assert dst["c"].tolist() == [1.5, -2.0]
    assert dst["d"].tolist() == [True, False]
    # And ours read with theirs, to the same arrays.
    ours = tmp_path / "ours.safetensors"
    fastload.save(ours, dst)
    read = load_file(str(ours))
    assert set(read) == set(arrays)
    for key, value in arrays.items():
        assert read[key].dtype == value.dtype and np.array_equal(read[key], value), key


def test_sharded_checkpoints(tmp_path, snapshot):
    src = model(1)
    index = tmp_path / "model.safetensors.index.json"
    fastload.save(index, src, max_shard_size=100)
    shards = sorted(p.name for p in tmp_path.glob("*.safetensors"))
    assert len(shards) > 2 and shards[0] == f"model-00001-of-{len(shards):05d}.safetensors"
    body = json.loads(index.read_text())
    assert set(body["weight_map"].values()) == set(shards)
    dst = model(0, fill=False)
    fastload.loadmodel(dst, index)
    assert np.array_equal(dst["h"][1]["w"], src["h"][1]["w"])
    assert dst["head"]["weight"] is dst["wte"]
    back = fastload.load(index)
    assert back["ln"]["eps"] == 1e-5 and back["head"]["weight"] is back["wte"]
    # A shard of another save (an interrupted one, say): refused.
    other = tmp_path / "other"
    other.mkdir()
    fastload.save(other / index.name, src, max_shard_size=100)
    (other / shards[0]).replace(tmp_path / shards[0])
    with pytest.raises(LoadError, match="written by another save"):
        fastload.loadmodel(model(0), index)
    fastload.save(index, src, max_shard_size=100)
    # A shard gone: refused before anything is written.
    (tmp_path / shards[-1]).unlink()
    dst = model(0)
    before = snapshot(dst)
    with pytest.raises(LoadError, match=shards[-1]):
        fastload.loadmodel(dst, index)
    before.assert_unchanged()


@pytest.mark.parametrize(
    "body",
    [{"weight_map": {"w": {"file": "a"}}}, {"weight_map": {"w": ["a"]}}, {"weight_map": []}],
    ids=["a shard that is an object", "a shard that is a list", "a list"],
)
def test_a_shard_index_that_does_not_map_names_to_files_is_refused(tmp_path, snapshot, body):
    index = tmp_path / "model.safetensors.index.json"
    index.write_text(json.dumps(body))
    dst = {"w": np.zeros(4, dtype=np.float32)}
    before = snapshot(dst)
    with pytest.raises(LoadError, match="not a shard index"):
        fastload.loadmodel(dst, index)
    before.assert_unchanged()
    with pytest.raises(LoadError, match="not a shard index"):
        fastload.load(index)


@pytest.mark.parametrize(
    "stored, weight_map, reason",
    [
        ("a:s1 b:s1 b:s2", {"a": "s1", "b": "s2"}, "holds tensor 'b', which the index puts in"),
        ("a:s1 b:s1", {"a": "s1"}, "holds tensor 'b', which the index does not list"),
        ("a:s1", '{"a": "s1", "a": "s1"}', "'a' is listed twice"),
        ("a:s1", {"a": ".."}, "not a file name in the same folder"),
        ("a:s1", {"a": ""}, "not a file name in the same folder"),
        ("a:s1", {"a": "\ud800"}, "not a file name in the same folder"),
    ],
    ids=[
        "in two shards",
        "in no index entry",
        "listed twice",
        "a parent folder",
        "no name",
        "a lone surrogate",
    ],
)
def test_a_shard_index_must_name_each_tensor_once_and_only_its_shard(
    tmp_path, snapshot, stored, weight_map, reason
):
    """A tensor stored twice, or stored where the index does not say, would give a value
    that depends on which copy a reader takes."""
    for key, shard in (pair.split(":") for pair in stored.split()):
        shard_path = tmp_path / f"{shard}.safetensors"
        kept = load_file(str(shard_path)) if shard_path.exists() else {}
        save_file({**kept, key: np.full(2, float(len(key + shard)), np.float32)}, str(shard_path))
    if isinstance(weight_map, dict):
        weight_map = json.dumps(
            {k: f"{v}.safetensors" if v not in ("", "..") else v for k, v in weight_map.items()}
        )
    else:
        weight_map = weight_map.replace('": "s1"', '": "s1.safetensors"')
    index = tmp_path / "model.safetensors.index.json"
    index.write_text('{"weight_map": ' + weight_map + "}")
    dst = {"a": np.zeros(2, np.float32), "b": np.zeros(2, np.float32)}
    before = snapshot(dst)
    with pytest.raises(LoadError, match=re.escape(reason)) as info:
        fastload.loadmodel(dst, index, strict=False)
    assert str(index) in str(info.value)
    before.assert_unchanged()


def header_file(path: Path, header: bytes, data: bytes = b"", length: int = None) -> Path:
    length = len(header) if length is None else length
    path.write_bytes(struct.pack("<Q", length) + header + data)
    return path


def with_metadata(path: Path, metadata: dict) -> Path:
    entry = {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}
    return header_file(path, tensor_header(__metadata__=metadata, w=entry), b"\0" * 16)


def raw_file(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def tensor_header(**entries) -> bytes:
    return json.dumps(entries).encode()


CORRUPT = {
    "empty": lambda p: raw_file(p, b""),
    "short": lambda p: raw_file(p, b"\x01\x02"),
    "header length beyond the file": lambda p: header_file(p, b"{}", length=1000),
    "huge header": lambda p: header_file(p, b"{}", length=1 << 40),
    "invalid JSON": lambda p: header_file(p, b"{not json"),
    "not UTF-8": lambda p: header_file(p, b"\xff\xfe"),
    "truncated data": lambda p: header_file(
        p, tensor_header(w={"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}), b"\0" * 8
    ),
    "overlapping offsets": lambda p: header_file(
        p,
        tensor_header(
            a={"dtype": "F32", "shape": [4], "data_offsets": [0, 16]},
            b={"dtype": "F32", "shape": [4], "data_offsets": [8, 24]},
        ),
        b"\0" * 24,
    ),
    "offsets out of range": lambda p: header_file(
        p, tensor_header(w={"dtype": "F32", "shape": [4], "data_offsets": [0, 1 << 60]}), b"\0"
    ),
    "dtype and shape disagree with the bytes": lambda p: header_file(
        p, tensor_header(w={"dtype": "F64", "shape": [4], "data_offsets": [0, 16]}), b"\0" * 16
    ),
    "unknown dtype": lambda p: header_file(
        p, tensor_header(w={"dtype": "F99", "shape": [4], "data_offsets": [0, 16]}), b"\0" * 16
    ),
    "shape overflow": lambda p: header_file(
        p,
        tensor_header(w={"dtype": "F32", "shape": [1 << 62, 1 << 62], "data_offsets": [0, 16]}),
        b"\0" * 16,
    ),
    "a name with an empty part": lambda p: header_file(
        p,
        tensor_header(**{"w..x": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}),
        b"\0" * 16,
    ),
    "a name below another tensor": lambda p: header_file(
        p,
        tensor_header(
            w={"dtype": "F32", "shape": [4], "data_offsets": [0, 16]},
            **{"w.x": {"dtype": "F32", "shape": [4], "data_offsets": [16, 32]}},
        ),
        b"\0" * 32,
    ),
    "a directory": lambda p: (p.mkdir(), p)[1],
    "a FIFO, which would block an open": lambda p: (os.mkfifo(p), p)[1],
    "no elements, yet a dimension NumPy refuses": lambda p: header_file(
        p, tensor_header(w={"dtype": "F32", "shape": [0, 1 << 62], "data_offsets": [0, 0]})
    ),
    **{
        f"tie table {name}": lambda p, ties=ties: with_metadata(p, {"fastload.ties": ties})
        for name, ties in {
            "not an object": "[]",
            "not of names": '{"v": 5}',
            "naming no tensor": '{"v": "x"}',
            "not JSON": "{nope",
        }.items()
    },
    "a name listed twice": lambda p: header_file(
        p,
        b'{"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}, '
        b'"w": {"dtype": "I32", "shape": [4], "data_offsets": [0, 16]}}',
        b"\0" * 16,
    ),
    "trailing bytes": lambda p: header_file(
        p, tensor_header(w={"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}), b"\0" * 20
    ),
}


@pytest.mark.parametrize("case", sorted(CORRUPT))
def test_corrupt_files_are_refused_naming_the_file(tmp_path, snapshot, case):
    path = CORRUPT[case](tmp_path / "bad.safetensors")
    dst = {"w": np.arange(4, dtype=np.float32)}
    before = snapshot(dst)
    with pytest.raises(LoadError) as info:
        fastload.loadmodel(dst, path)
    assert str(path) in str(info.value)
    assert info.value.problems[0][0] == str(path)
    before.assert_unchanged()
    with pytest.raises(LoadError):
        fastload.load(path)


@pytest.mark.parametrize(
    "state",
    [
        "[]",
        '{"k": ' + "[" * 50000 + "]" * 50000 + "}",
        '{"k": ["numpy", "|V8", ["int", 100000000000]]}',  # a record of 100 GB
        '{"k": ["no such kind", 1]}',
    ],
    ids=["not an object", "nested too deep", "a huge record", "an unknown kind"],
)
def test_invalid_non_array_state_in_a_file_is_a_load_error(tmp_path, snapshot, state):
    """Refused by a load into a model too, which needs no more than the arrays: a file
    that `load` refuses is refused everywhere."""
    path = with_metadata(tmp_path / "bad.safetensors", {"fastload.state": state})
    invalid = "bad.safetensors: its fastload metadata is invalid"
    with pytest.raises(LoadError, match=invalid):
        fastload.load(path)
    dst = {"w": np.zeros(4, np.float32)}
    before = snapshot(dst)
    with pytest.raises(LoadError, match=invalid):
        fastload.loadmodel(dst, path)
    before.assert_unchanged()


@pytest.mark.parametrize(
    "state",
    [{"w.x": ["int", 1]}, {"a": ["int", 1], "a.b": ["int", 2]}, {"": ["int", 1]}],
    ids=["below a tensor", "below a value", "an empty name"],
)
def test_stored_values_at_no_path_of_one_tree_are_refused_by_every_load(tmp_path, snapshot, state):
    path = with_metadata(tmp_path / "bad.safetensors", {"fastload.state": json.dumps(state)})
    with pytest.raises(LoadError, match="bad.safetensors: "):
        fastload.load(path)
    dst = {"w": np.zeros(4, np.float32)}
    before = snapshot(dst)
    with pytest.raises(LoadError, match="bad.safetensors: "):
        fastload.loadmodel(dst, path)
    before.assert_unchanged()


def test_a_missing_file_is_a_load_error(tmp_path):
    with pytest.raises(LoadError, match="nothing.safetensors"):
        fastload.load(tmp_path / "nothing.safetensors")


def test_a_failed_save_leaves_the_old_file_and_no_temporary_file(tmp_path):
    path = tmp_path / "model.safetensors"
    fastload.save(path, {"w": np.ones(3)})
    old = path.read_bytes()
    with pytest.raises(TypeError):
        fastload.save(path, {"w": np.zeros(3), "when": np.datetime64("2020-01-01")})
    with pytest.raises(TypeError):
        fastload.save(path, {"w": np.zeros(3), "objects": np.array([None], dtype=object)})
    with pytest.raises(TypeError):
        fastload.save(path, {"w": np.zeros(3, dtype="U3")})
    with pytest.raises(ValueError, match="reserved"):
        fastload.save(path, {"w": np.zeros(3)}, metadata={"fastload.state": "{}"})
    assert path.read_bytes() == old
    assert os.listdir(tmp_path) == ["model.safetensors"]


def test_saved_arrays_of_any_layout_and_byte_order(tmp_path):
    base = np.arange(24, dtype=np.float64).reshape(4, 6)
    tree = {
        "t": base.T,
        "s": base[::2, 1::2],
        "be": np.arange(3, dtype=">i4"),
        "scalar": np.array(7, dtype=np.int64),
        "strided scalar": base[1, 2, ...],
    }
    path = tmp_path / "layouts.safetensors"
    fastload.save(path, tree)
    back = fastload.load(path)
    for key in tree:
        assert back[key].shape == tree[key].shape, key
        assert np.array_equal(back[key], tree[key]), key
    assert back["be"].dtype == np.dtype("<i4")
    dst = {key: np.zeros_like(value) for key, value in tree.items()}
    fastload.loadmodel(dst, path)
    assert dst["scalar"] == 7 and dst["strided scalar"] == base[1, 2]


def test_torch_modules_save_and_load_through_files(tmp_path):
    torch = pytest.importorskip("torch")
    from safetensors.torch import save_model
    from tests_torch_models import TinyGPT, build

    src, dst = build(TinyGPT, 1), build(TinyGPT, 0)
    ours = tmp_path / "ours.safetensors"
    fastload.save(ours, src)
    fastload.loadmodel(dst, ours)
    for (key, a), b in zip(dst.state_dict().items(), src.state_dict().values()):
        assert torch.equal(a, b), key
    assert dst.lm_head.weight is dst.wte.weight

    # safetensors.torch stores a tied pair once, under one of its names: the other is
    # filled from it, as safetensors' own load_model does.
    theirs = tmp_path / "theirs.safetensors"
    save_model(src, str(theirs))
    stored = set(load_file(str(theirs)))
    assert len({"wte.weight", "lm_head.weight"} & stored) == 1
    dst = build(TinyGPT, 0)
    fastload.loadmodel(dst, theirs)
    for (key, a), b in zip(dst.state_dict().items(), src.state_dict().values()):
        assert torch.equal(a, b), key

    # bfloat16 modules, both ways.
    half = build(TinyGPT, 2).to(torch.bfloat16)
    path = tmp_path / "bf16.safetensors"
    fastload.save(path, half)
    assert load_file(str(path))["wte.weight"].dtype == ml_dtypes.bfloat16
    target = build(TinyGPT, 0).to(torch.bfloat16)
    fastload.loadmodel(target, path)
    assert torch.equal(target.h[1].mlp[0].weight, half.h[1].mlp[0].weight)


def complex_views(torch, count: int) -> dict:
    """Tensor views whose values save must copy (conjugate and negative views, strided),
    each of its own data."""
    views = {}
    for i in range(count):
        c = torch.randn(64, 32, dtype=torch.complex64)
        views[f"v{i}"] = [c.conj().imag.T, c.T.conj(), c.conj()[:, ::2]][i % 3]
    return views


def test_tensor_views_copied_by_save_keep_their_own_values(tmp_path):
    torch = pytest.importorskip("torch")
    tree = complex_views(torch, 24)
    base = torch.randn(4, dtype=torch.complex64)
    tree.update(conj=base.conj(), same_conj=None, plain=base)
    tree["same_conj"] = tree["conj"]  # the same view twice: a tie
    path = tmp_path / "views.safetensors"
    fastload.save(path, tree)
    back = fastload.load(path)
    for key, value in tree.items():
        expected = value.resolve_conj().resolve_neg().numpy()
        assert np.array_equal(back[key], expected), key
    assert back["same_conj"] is back["conj"]
    assert sorted(load_file(path)) == sorted(set(tree) - {"same_conj"})


NUMPY_SCALARS = {
    "f64": np.float64(2.5),
    "f32": np.float32(1.5),
    "f16": np.float16(0.1),
    "nan": np.float64("nan"),
    "c128": np.complex128(1 - 2.5j),
    "c64": np.complex64(0.1 + 3j),
    "i8": np.int8(-3),
    "u64": np.uint64(2**64 - 1),
    "bf16": ml_dtypes.bfloat16(1.5),
    "bf16 nan": ml_dtypes.bfloat16("nan"),
    "f8": ml_dtypes.float8_e4m3fn(-0.5),
}


def test_numpy_scalars_round_trip_with_their_dtype(tmp_path):
    tree = {**NUMPY_SCALARS, "text": np.str_("a\0"), "raw": np.bytes_(b"b\0"), "b": np.bool_(1)}
    path = tmp_path / "scalars.safetensors"
    fastload.save(path, {"w": np.ones(1), "s": tree})
    back = fastload.load(path)["s"]
    for key, value in NUMPY_SCALARS.items():
        assert back[key].dtype == value.dtype, key
        assert np.array_equal(back[key], value, equal_nan=True), key
    # Text and flags come back as str, bytes and bool, of the same value.
    assert back["text"] == "a\0" and back["raw"] == b"b\0" and back["b"] is True


def test_a_stored_bfloat16_value_without_ml_dtypes_names_the_package(tmp_path, monkeypatch):
    path = tmp_path / "model.safetensors"
    fastload.save(path, {"w": np.ones(2, np.float32), "scale": ml_dtypes.bfloat16(0.5)})
    monkeypatch.setitem(sys.modules, "ml_dtypes", None)  # as if not installed
    with pytest.raises(
        LoadError, match="stored value 'scale': dtype BF16 needs the ml_dtypes package"
    ):
        fastload.load(path)
    # A load into a model takes the model's own value there, so needs no package.
    model = {"w": np.zeros(2, np.float32), "scale": 0.5}
    fastload.loadmodel(model, path)
    assert model["w"].tolist() == [1.0, 1.0] and model["scale"] == 0.5
    # Its name is still checked: one below a tensor is refused, as `load` refuses it.
    state = json.dumps({"w.s": ["numpy", "BF16", ["float", "0.5"]]})
    bad = with_metadata(tmp_path / "bad.safetensors", {"fastload.state": state})
    with pytest.raises(LoadError, match="bad.safetensors: stored value 'w.s' is below 'w'"):
        fastload.loadmodel({"w": np.zeros(4, np.float32)}, bad)
    # And so is the number it holds, which `load` with the package would refuse.
    for number in (["str", "0.5"], ["numpy", "F32", ["float", "0.5"]], ["float", "half"]):
        state = json.dumps({"s": ["numpy", "BF16", number]})
        invalid = with_metadata(tmp_path / "invalid.safetensors", {"fastload.state": state})
        with pytest.raises(LoadError, match="its fastload metadata is invalid"):
            fastload.loadmodel({"w": np.zeros(4, np.float32), "s": 0.5}, invalid)
    monkeypatch.undo()  # (ml_dtypes back: `load` refuses the name, not the dtype)
    with pytest.raises(LoadError, match="stored value 'w.s' is below 'w', which is a tensor"):
        fastload.load(bad)


@pytest.mark.parametrize(
    "value",
    [
        np.longdouble(1.5),
        np.clongdouble(1 + 1j),
        np.void(b"ab"),
        np.datetime64("2020-01-01"),
        np.datetime64(1, "ns"),
        np.timedelta64(3, "s"),
    ],
    ids=repr,
)
def test_numpy_scalars_that_would_not_load_back_are_refused_by_save(tmp_path, value):
    if value.dtype in (np.dtype(np.float64), np.dtype(np.complex128)):
        pytest.skip("this platform's long double is a double, which round-trips")
    path = tmp_path / "model.safetensors"
    fastload.save(path, {"w": np.ones(3)})
    old = path.read_bytes()
    with pytest.raises(TypeError, match=re.escape("layers.k: cannot store a NumPy scalar")):
        fastload.save(path, {"w": np.ones(3), "layers": {"k": value}})
    assert path.read_bytes() == old
    assert os.listdir(tmp_path) == ["model.safetensors"]


def stop_in_shard(number: int):
    """A progress callable that interrupts a save of small shards (each reported once,
    when whole) as it ends its shard ``number``, before that shard is renamed."""
    calls = []

    def progress(done, total):
        calls.append(done)
        if len(calls) == number:
            raise KeyboardInterrupt

    return progress


def files_of(folder: Path) -> dict:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.mark.parametrize("how", ["interrupted", "a header too long", "the index unwritten"])
def test_a_sharded_save_failing_midway_leaves_the_old_checkpoint_loadable(
    tmp_path, monkeypatch, how
):
    index = tmp_path / "model.safetensors.index.json"
    old = {f"w{i}": np.full(8, i, dtype=np.float64) for i in range(4)}  # a shard each
    fastload.save(index, old, max_shard_size=64)
    before = files_of(tmp_path)
    assert len(before) == 5
    new = {key: value + 100 for key, value in old.items()}
    if how == "interrupted":
        with pytest.raises(KeyboardInterrupt):
            fastload.save(index, new, max_shard_size=64, progress=stop_in_shard(3))
    elif how == "the index unwritten":
        # Every shard written, then the index fails (a full disk, say).
        def full_disk(path, data, kept=None):
            raise OSError(f"{path}: cannot write: No space left on device")

        monkeypatch.setattr(fastload._files._fastload, "write_raw", full_disk)
        with pytest.raises(OSError, match="No space left"):
            fastload.save(index, new, max_shard_size=64)
        monkeypatch.undo()
    else:
        # The third shard's header alone is too long (a long name, under a low limit).
        new = {key + "x" * 2000 if key == "w2" else key: value for key, value in new.items()}
        monkeypatch.setattr(fastload._files, "MAX_HEADER_BYTES", 1000)
        with pytest.raises(ValueError, match="model-00003-of-00004.safetensors: the header"):
            fastload.save(index, new, max_shard_size=64)
    assert files_of(tmp_path) == before  # no shard replaced, no temporary file left
    back = fastload.load(index)
    assert all(np.array_equal(back[key], value) for key, value in old.items())
    fastload.save(index, {key: value + 100 for key, value in old.items()}, max_shard_size=64)
    assert fastload.load(index)["w3"][0] == 103


def test_a_header_longer_than_safetensors_reads_is_refused_before_writing(tmp_path):
    path = tmp_path / "model.safetensors"
    fastload.save(path, {"w": np.ones(3)})
    old = path.read_bytes()
    # The note goes into the header's metadata, escaped as JSON.
    tree = {"w": np.ones(3), "note": "x" * 100_000_000}
    with pytest.raises(ValueError, match=r"more than the 100000000 that safetensors reads"):
        fastload.save(path, tree)
    with pytest.raises(ValueError, match="model.safetensors: the header"):
        fastload.save(path, {"w": np.ones(3)}, metadata={"note": "x" * 100_000_000})
    assert path.read_bytes() == old
    assert os.listdir(tmp_path) == ["model.safetensors"]


@pytest.mark.parametrize(
    "tree, key",
    [
        ({"__metadata__": np.ones(2), "w": np.ones(1)}, "__metadata__"),
        ({"w": np.ones(1), "a": {"": np.ones(2)}}, "a."),
        ({"w": np.ones(1), "a": {"": {"b": 1.5}}}, "a..b"),
        ({"w": np.ones(1), "": 3}, ""),
        (np.ones(3), ""),
    ],
    ids=["__metadata__", "a trailing empty key", "an empty key between", "an empty key", "a leaf"],
)
def test_names_a_file_cannot_hold_are_refused_by_save(tmp_path, tree, key):
    path = tmp_path / "model.safetensors"
    fastload.save(path, {"w": np.ones(3)})
    old = path.read_bytes()
    with pytest.raises(ValueError, match=re.escape(f"key {key!r}")):
        fastload.save(path, tree)
    assert path.read_bytes() == old
    assert os.listdir(tmp_path) == ["model.safetensors"]


def test_a_shard_index_nested_too_deep_or_not_an_object_is_refused(tmp_path):
    index = tmp_path / "model.safetensors.index.json"
    for text in ('{"weight_map": {}, "metadata": ' + "[" * 100_000 + "]" * 100_000 + "}", "[]"):
        index.write_text(text)
        with pytest.raises(LoadError, match="model.safetensors.index.json: not a shard index"):
            fastload.load(index)
        with pytest.raises(LoadError, match="not a shard index"):
            fastload.loadmodel({"w": np.zeros(1)}, index)


def two_tensor_file(path: Path, metadata: dict) -> Path:
    entry = {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}
    later = {"dtype": "F32", "shape": [4], "data_offsets": [16, 32]}
    data = np.arange(8, dtype=np.float32).tobytes()
    return header_file(path, tensor_header(__metadata__=metadata, w=entry, v=later), data)


@pytest.mark.parametrize(
    "metadata, key",
    [
        ({"fastload.ties": '{"v": "w"}'}, "'v'"),  # a tie whose name is a stored tensor
        ({"fastload.ties": '{"w": "w"}'}, "'w'"),
        ({"fastload.state": '{"v": ["int", 1]}'}, "'v'"),  # a value where a tensor is
        ({"fastload.ties": '{"u": "w"}', "fastload.state": '{"u": ["none", null]}'}, "'u'"),
    ],
    ids=["tie over a tensor", "tie to itself", "value over a tensor", "value over a tie"],
)
def test_fastload_metadata_at_odds_with_the_tensors_is_refused_naming_the_key(
    tmp_path, snapshot, metadata, key
):
    path = two_tensor_file(tmp_path / "forged.safetensors", metadata)
    invalid = "forged.safetensors: its fastload metadata is invalid"
    with pytest.raises(LoadError, match=invalid) as info:
        fastload.load(path)
    assert key in str(info.value)
    dst = {"w": np.zeros(4, np.float32), "v": np.zeros(4, np.float32)}
    before = snapshot(dst)
    with pytest.raises(LoadError, match=key):
        fastload.loadmodel(dst, path)
    before.assert_unchanged()


@pytest.mark.filterwarnings("ignore:Sparse CSR tensor support is in beta")
def test_a_sparse_tensor_is_refused_by_save_saying_to_make_it_dense(tmp_path):
    torch = pytest.importorskip("torch")
    path = tmp_path / "model.safetensors"
    for tensor in (torch.eye(3).to_sparse(), torch.eye(3).to_sparse_csr()):
        with pytest.raises(TypeError) as info:
            fastload.save(path, {"layer": {"w": tensor}})
        message = str(info.value)
        assert message.startswith("layer.w: a sparse tensor (layout torch.sparse_")
        assert "dtype" not in message and "to_dense()" in message
    assert os.listdir(tmp_path) == []


def test_a_wrapper_tensor_is_refused_by_save_saying_what_it_is(tmp_path):
    torch = pytest.importorskip("torch")
    two_tensor = pytest.importorskip("torch.testing._internal.two_tensor")
    wrapper = two_tensor.TwoTensor(torch.zeros(3), torch.zeros(3))
    with pytest.raises(TypeError, match="w: a TwoTensor holds no memory of its own"):
        fastload.save(tmp_path / "model.safetensors", {"w": wrapper})
    assert os.listdir(tmp_path) == []


def test_saved_files_get_the_permissions_the_umask_gives_new_files(tmp_path):
    previous = os.umask(0o027)
    try:
        single, index = tmp_path / "m.safetensors", tmp_path / "s.safetensors.index.json"
        fastload.save(single, {"w": np.ones(4)})
        fastload.save(index, {"a": np.ones(4), "b": np.ones(4)}, max_shard_size=32)
    finally:
        os.umask(previous)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in tmp_path.iterdir()}
    assert len(modes) == 4 and set(modes.values()) == {0o640}, modes


def test_a_file_whose_names_do_not_fit_the_destination_is_refused_by_the_walk(tmp_path, snapshot):
    """The file's names are paths of one tree, the destination's are not those paths:
    the walk says where they differ, as for the same source in memory."""
    path = tmp_path / "model.safetensors"
    fastload.save(path, {"layer": {"weight": np.ones(2, np.float32)}, "b": {"c": np.ones(2)}})
    flat = {"layer.weight": np.zeros(2, np.float32), "b": {"c": np.zeros(2)}}
    before = snapshot(flat)
    with pytest.raises(ArgumentError, match=r"missing keys \['layer.weight'\]"):
        fastload.loadmodel(flat, path)
    before.assert_unchanged()
    # A tie of the destination at a path the file uses for a node.
    shared = np.zeros(2, np.float32)
    tied = {"layer": {"weight": shared}, "b": shared}
    before = snapshot(tied)
    with pytest.raises(LoadError, match=r"\bb\b"):
        fastload.loadmodel(tied, path)
    before.assert_unchanged()


def test_a_name_in_the_metadata_that_is_no_text_is_a_load_error(tmp_path, snapshot):
    ties = json.dumps({"t\ud800": "w"})
    path = two_tensor_file(tmp_path / "model.safetensors", {"fastload.ties": ties})
    dst = {"w": np.zeros(2, np.float32), "v": np.zeros(2, np.float32)}
    before = snapshot(dst)
    for call in (lambda: fastload.loadmodel(dst, path), lambda: fastload.load(path)):
        with pytest.raises(LoadError, match="is not text: it holds a lone surrogate") as info:
            call()
        assert str(path) in str(info.value)
    before.assert_unchanged()


def test_a_header_name_that_is_no_text_is_a_load_error(tmp_path):
    header = b'{"w\\ud800": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}'
    path = header_file(tmp_path / "model.safetensors", header, b"\0" * 4)
    with pytest.raises(LoadError, match="no character \\(a lone surrogate\\)"):
        fastload.load(path)


def test_an_array_save_cannot_hold_is_refused_naming_its_key(tmp_path):
    model = {"layers": [{"w": np.ones(2)} for _ in range(3)]}
    model["layers"][1]["w"] = np.ones(2, np.complex128)
    with pytest.raises(TypeError, match=r"^layers\.1\.w: safetensors cannot hold dtype"):
        fastload.save(tmp_path / "model.safetensors", model)
    assert not any(tmp_path.iterdir())


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes here")
def test_save_refuses_what_is_no_regular_file_and_paths_naming_a_folder(tmp_path):
    os.mkfifo(tmp_path / "pipe")
    (tmp_path / "folder").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "folder")
    state = {"w": np.ones(2)}
    with pytest.raises(OSError, match="pipe: is not a regular file"):
        fastload.save(tmp_path / "pipe", state)
    for name in ("folder", "link"):
        with pytest.raises(IsADirectoryError, match=f"{name}: is a folder"):
            fastload.save(tmp_path / name, state)
    for path in (f"{tmp_path}/new/", f"{tmp_path}/m.safetensors/."):
        with pytest.raises(IsADirectoryError, match="names a folder"):
            fastload.save(path, state)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder", "link", "pipe"]
    assert (tmp_path / "link").is_symlink() and not any((tmp_path / "folder").iterdir())


@pytest.mark.parametrize("shards", [None, 8], ids=["one file", "sharded"])
def test_a_save_into_a_folder_that_does_not_exist_names_the_folder(tmp_path, shards):
    name = "m.safetensors.index.json" if shards else "m.safetensors"
    tmp_path = Path(os.path.realpath(tmp_path))  # (messages name the real folder)
    missing = tmp_path / "ckpt"
    with pytest.raises(FileNotFoundError, match=f"folder {re.escape(str(missing))} does not"):
        fastload.save(missing / name, {"w": np.ones(4), "b": np.ones(4)}, max_shard_size=shards)
    assert not missing.exists()
    # A file where the path needs a folder is named as such, however deep below it.
    (tmp_path / "notes").write_text("kept")
    for folder in (tmp_path / "notes", tmp_path / "notes" / "deeper"):
        with pytest.raises(NotADirectoryError, match=f"{re.escape(str(tmp_path))}/notes is not a"):
            fastload.save(folder / name, {"w": np.ones(4)}, max_shard_size=shards)
    assert sorted(os.listdir(tmp_path)) == ["notes"] and (tmp_path / "notes").read_text() == "kept"


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions and links")
def test_a_save_over_a_file_keeps_its_permissions_and_writes_through_a_link(tmp_path):
    path = tmp_path / "private.safetensors"
    fastload.save(path, {"w": np.zeros(2)})
    path.chmod(0o600)
    (tmp_path / "link.safetensors").symlink_to(path)
    fastload.save(tmp_path / "link.safetensors", {"w": np.ones(2)})
    assert (tmp_path / "link.safetensors").is_symlink()
    assert fastload.load(path)["w"].tolist() == [1.0, 1.0]
    assert path.stat().st_mode & 0o777 == 0o600


def test_a_flat_state_saves_under_its_dotted_keys_and_one_that_is_no_tree_is_refused(tmp_path):
    path = tmp_path / "flat.safetensors"
    w = np.arange(4.0)
    fastload.save(path, {"fc.weight": w, "fc.bias": np.zeros(2), "head.weight": w, "n": 3})
    assert sorted(load_file(str(path))) == ["fc.bias", "fc.weight"]  # the tie once
    back = fastload.load(path)
    assert back["head"]["weight"] is back["fc"]["weight"] and back["n"] == 3
    for clash, message in (
        ({"a": np.ones(1), "a.b": np.ones(1)}, "key 'a.b' is below 'a'"),
        ({"a.": np.ones(1)}, "key 'a.' has an empty part"),
        ({"m.w": np.ones(1), "m._extra_state": {"k": 1}}, "'m._extra_state' holds a dict"),
    ):
        with pytest.raises(ValueError, match=message):
            fastload.save(tmp_path / "clash.safetensors", clash)
    assert sorted(os.listdir(tmp_path)) == ["flat.safetensors"]


@pytest.mark.skipif(os.name != "posix", reason="symbolic links")
def test_a_save_through_a_loop_of_links_fails_as_open_does_and_keeps_the_links(tmp_path):
    (tmp_path / "a").symlink_to("b")
    (tmp_path / "b").symlink_to("a")
    with pytest.raises(OSError) as opened:
        open(tmp_path / "a", "wb")
    with pytest.raises(OSError, match="a: too many levels of symbolic links") as saved:
        fastload.save(tmp_path / "a", {"w": np.ones(2)})
    assert saved.value.errno == opened.value.errno == errno.ELOOP
    assert (tmp_path / "a").is_symlink() and (tmp_path / "b").is_symlink()
    assert sorted(os.listdir(tmp_path)) == ["a", "b"]


def test_a_shard_index_is_read_as_utf8_whatever_the_locale(tmp_path, monkeypatch):
    """JSON is UTF-8: an index written with raw non-ASCII names (as other tools write
    them) loads where the locale's encoding is another."""
    shard = "m-00001-of-00001.safetensors"
    save_file({"größe": np.ones(2, np.float32)}, str(tmp_path / shard))
    index = tmp_path / "m.safetensors.index.json"
    body = {"metadata": {}, "weight_map": {"größe": shard}}
    index.write_bytes(json.dumps(body, ensure_ascii=False).encode("utf-8"))
    read_text = Path.read_text

    def latin1_default(self, encoding=None, errors=None):
        return read_text(self, encoding or "latin-1", errors)

    monkeypatch.setattr(Path, "read_text", latin1_default)
    assert fastload.load(index)["größe"].tolist() == [1.0, 1.0]


def test_a_sharded_save_removes_the_shards_its_old_checkpoint_had_beyond_its_own(tmp_path):
    index = tmp_path / "model.safetensors.index.json"
    fastload.save(index, {f"w{i}": np.full(4, i, np.float32) for i in range(6)}, max_shard_size=16)
    assert len(list(tmp_path.iterdir())) == 7
    (tmp_path / "notes.txt").write_text("kept")
    fastload.save(index, {"w": np.ones(4, np.float32)}, max_shard_size=16)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == [
        "model-00001-of-00001.safetensors",
        "model.safetensors.index.json",
        "notes.txt",
    ]
    assert fastload.load(index)["w"].tolist() == [1.0] * 4
    with pytest.raises(ValueError, match="'total_size' is the index's own"):
        fastload.save(index, {"w": np.ones(4)}, max_shard_size=16, metadata={"total_size": "1"})


def test_a_sharded_save_of_no_arrays_writes_the_index_alone_and_saves_over_it(tmp_path):
    """A shard its index names no array of would be no file of the checkpoint's, which a
    later save would refuse to overwrite."""
    index = tmp_path / "m.safetensors.index.json"
    for tree in ({"a": 1}, {"a": np.ones(2)}, {"a": 2}):
        fastload.save(index, tree, max_shard_size=100)
        shards = ["m-00001-of-00001.safetensors"] if isinstance(tree["a"], np.ndarray) else []
        assert sorted(p.name for p in tmp_path.iterdir()) == shards + [index.name]
        back = fastload.load(index)
        assert back.keys() == {"a"} and np.array_equal(back["a"], tree["a"])


def test_a_sharded_save_whose_last_shard_cannot_be_renamed_replaces_nothing(tmp_path):
    index = tmp_path / "model.safetensors.index.json"
    old = {f"w{i}": np.full(4, i, np.float32) for i in range(2)}
    fastload.save(index, old, max_shard_size=16)  # two shards
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    (tmp_path / "model-00003-of-00003.safetensors").mkdir()  # where the third will go
    new = {f"w{i}": np.full(4, 10 + i, np.float32) for i in range(3)}
    with pytest.raises(IsADirectoryError, match="model-00003-of-00003.safetensors: is a folder"):
        fastload.save(index, new, max_shard_size=16)
    after = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    assert after == before  # no shard renamed, no temporary file left
    assert fastload.load(index)["w1"].tolist() == [1.0] * 4


def test_a_missing_shard_index_is_worded_as_a_missing_file(tmp_path):
    for name in ("model.safetensors", "model.safetensors.index.json"):
        with pytest.raises(LoadError, match=f"{name}: No such file or directory"):
            fastload.load(tmp_path / name)


@pytest.mark.skipif(os.name != "posix", reason="symbolic links")
def test_a_sharded_save_through_a_linked_index_keeps_its_shards_beside_the_link(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    target = tmp_path / "b" / "model.safetensors.index.json"
    target.write_text("{}")
    link = tmp_path / "a" / "model.safetensors.index.json"
    link.symlink_to(target)
    state = {f"w{i}": np.full(4, i, np.float32) for i in range(2)}
    fastload.save(link, state, max_shard_size=16)
    back = fastload.load(link)  # shards are looked up beside the path given
    assert all(np.array_equal(back[k], v) for k, v in state.items())


def test_a_sharded_save_does_not_overwrite_another_checkpoints_shards(tmp_path):
    first = tmp_path / "y.index.json"
    old = {f"w{i}": np.full(4, i, np.float32) for i in range(2)}
    fastload.save(first, old, max_shard_size=16)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    # Both indexes name their shards y-0000k-of-0000n.safetensors.
    with pytest.raises(FileExistsError, match="y-00001-of-00002.safetensors: exists and is no"):
        fastload.save(tmp_path / "y.safetensors.index.json", old, max_shard_size=16)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    # Its own shards a save replaces, the ones its old index names.
    new = {f"w{i}": np.full(4, 10 + i, np.float32) for i in range(2)}
    fastload.save(first, new, max_shard_size=16)
    assert fastload.load(first)["w1"].tolist() == [11.0] * 4


def test_views_of_one_array_as_two_float8_types_are_saved_apart(tmp_path):
    # Every float8 dtype of ml_dtypes is `<V1` to NumPy's dtype.str.
    x = np.array([1.0, 2.0, 448.0, -3.0], ml_dtypes.float8_e4m3fn)
    y = x.view(ml_dtypes.float8_e4m3fnuz)
    path = tmp_path / "f8.safetensors"
    fastload.save(path, {"x": x, "y": y})
    back = fastload.load(path)
    assert back["y"].dtype == y.dtype and back["y"].tobytes() == y.tobytes()
    assert back["x"].dtype == x.dtype and back["x"].tobytes() == x.tobytes()


def test_a_state_of_numpy_scalars_within_numpy_scalars_is_a_load_error(tmp_path):
    state = '{"x":' + '["numpy","<i4",' * 3000 + '["int",1]' + "]" * 3000 + "}"
    header = json.dumps(
        {
            "__metadata__": {"fastload.state": state},
            "w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},
        }
    ).encode()
    path = header_file(tmp_path / "deep.safetensors", header, b"\0" * 4)
    # (JSON parsers before Python 3.12 give up on such depth first.)
    with pytest.raises(LoadError, match="fastload metadata is invalid") as info:
        fastload.load(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize(
    "tree, metadata, what",
    [
        ({"m": {"a\ud800": np.ones(1)}}, None, "key 'a\\\\ud800' holds a lone surrogate"),
        ({"w": np.ones(1)}, {"k\udcff": "v"}, "a metadata key cannot be stored .*'k\\\\udcff'"),
        ({"w": np.ones(1)}, {"k": "\ud800"}, "the metadata value of 'k' cannot be stored"),
    ],
)
def test_names_that_are_no_utf_8_are_refused_by_save_naming_them(tmp_path, tree, metadata, what):
    path = tmp_path / "model.safetensors"
    with pytest.raises(ValueError, match=what):
        fastload.save(path, tree, metadata=metadata)
    assert os.listdir(tmp_path) == []


def test_saved_arrays_start_aligned_whatever_their_order(tmp_path):
    tree = {"a": np.ones(3, bool), "b": np.arange(4.0), "c": np.ones(3, np.float16), "d": 1.5}
    path = tmp_path / "mixed.safetensors"
    fastload.save(path, tree)
    back = fastload.load(path)
    for key in "abc":
        assert back[key].flags.aligned, key
        assert np.array_equal(back[key], tree[key]), key
    assert back["d"] == 1.5
    index = tmp_path / "mixed.safetensors.index.json"
    fastload.save(index, tree, max_shard_size=20)
    assert all(a.flags.aligned for a in fastload.load(index).values() if hasattr(a, "flags"))
