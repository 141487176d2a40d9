"""Flux.jl's ``loadmodel!`` and ``state`` test cases, ported to fastload.

The layers are plain Python classes holding NumPy arrays, laid out like Flux's structs
(weights in PyTorch's (out, in, kh, kw) order). fastload sees them through their
``__dict__``, exactly as it sees any user model.
"""

from __future__ import annotations

import collections
import dataclasses
import math
import operator

import numpy as np
import pytest

import fastload

RNG = np.random.default_rng(20240611)


# --------------------------------------------------------------------------- layers


def relu(x):
    return np.maximum(x, 0)


def identity(x):
    return x


def softmax(x):
    e = np.exp(x - x.max(axis=0))
    return e / e.sum(axis=0)


def flatten(x):
    return x.reshape(-1, x.shape[-1])


def randn(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


class Layer:
    """Marker base class, so that the test helpers know what to walk."""


class Dense(Layer):
    def __init__(self, weight, bias=True, σ=identity):
        self.weight = weight
        if bias is True:
            bias = randn(weight.shape[0])
        self.bias = bias
        self.σ = σ


def dense(n_in, n_out, σ=identity, bias=True):
    return Dense(randn(n_out, n_in), bias, σ)


class Conv(Layer):
    def __init__(self, k, n_in, n_out, σ=identity):
        self.σ = σ
        self.weight = randn(n_out, n_in, *k)
        self.bias = randn(n_out)
        self.stride = (1, 1)
        self.pad = (0, 0, 0, 0)
        self.dilation = (1, 1)
        self.groups = 1


class MaxPool(Layer):
    def __init__(self, k):
        self.k = k
        self.pad = (0, 0, 0, 0)
        self.stride = k


class BatchNorm(Layer):
    def __init__(self, chs, λ=identity):
        self.λ = λ
        self.β = randn(chs)
        self.γ = randn(chs)
        self.μ = randn(chs)
        setattr(self, "σ²", np.abs(randn(chs)) + 1)
        self.ε = 1e-5
        self.momentum = 0.1
        self.affine = True
        self.track_stats = True
        self.active = None
        self.chs = chs

    @property
    def var(self):
        return getattr(self, "σ²")


class Dropout(Layer):
    def __init__(self, p, dims=None):
        self.p = p
        self.dims = dims
        self.active = None


class Parallel(Layer):
    def __init__(self, connection, *layers):
        self.connection = connection
        self.layers = layers


class Chain(Layer):
    """``Chain(a, b)`` keeps a tuple of layers, ``Chain([a, b])`` a list, as in Flux."""

    def __init__(self, *layers):
        if len(layers) == 1 and isinstance(layers[0], list):
            self.layers = layers[0]
        else:
            self.layers = layers

    def __getitem__(self, i):
        return self.layers[i]

    def __len__(self):
        return len(self.layers)


def set_testmode(model, mode=True):
    """Flux's ``testmode!``/``trainmode!``: set ``active`` on every layer that has one."""
    if isinstance(model, (Chain, Parallel)):
        for layer in model.layers:
            set_testmode(layer, mode)
    elif hasattr(model, "active"):
        model.active = not mode


def set_trainmode(model):
    set_testmode(model, False)


# --------------------------------------------------------------------------- helpers


def _walk(x, path=""):
    """Yield ``(path, object)`` for every node and leaf of a model, parents first."""
    yield path, x
    if isinstance(x, np.ndarray):
        return
    if isinstance(x, Layer):
        items = list(vars(x).items())
    elif isinstance(x, dict):
        items = list(x.items())
    elif isinstance(x, (list, tuple)):
        items = list(enumerate(x))
    else:
        return
    for key, child in items:
        yield from _walk(child, f"{path}.{key}" if path else str(key))


def snapshot(model):
    """Everything a load could change: the object at each path and each array's bytes."""
    return [
        (path, obj, (obj.shape, obj.dtype, obj.tobytes()) if isinstance(obj, np.ndarray) else None)
        for path, obj in _walk(model)
    ]


def assert_unchanged(model, before):
    after = snapshot(model)
    assert [p for p, _, _ in after] == [p for p, _, _ in before]
    for (path, obj, data), (_, old_obj, old_data) in zip(after, before):
        assert obj is old_obj, f"{path} was replaced"
        assert data == old_data, f"{path} was written"


def assert_rejected(exc_class, dst, src, **kwargs):
    """``loadmodel`` raises exactly ``exc_class`` and leaves ``dst`` bit-for-bit unchanged."""
    before = snapshot(dst)
    with pytest.raises(fastload.LoadError) as info:
        fastload.loadmodel(dst, src, **kwargs)
    assert type(info.value) is exc_class, repr(info.value)
    problems = info.value.problems
    assert isinstance(problems, list) and problems
    for problem in problems:
        assert len(problem) == 2 and all(isinstance(part, str) for part in problem)
    assert_unchanged(dst, before)
    return info.value


def assert_dense_equal(a, b):
    np.testing.assert_array_equal(a.weight, b.weight)
    np.testing.assert_array_equal(a.bias, b.bias)


def problem_paths(exc):
    return {path for path, _ in exc.problems}


# --------------------------------------------------------------------------- loadmodel


def test_chain_into_chain_copies_parameters_and_keeps_activations():
    m1 = Chain(dense(10, 5), dense(5, 2, relu))
    m2 = Chain(dense(10, 5), dense(5, 2))
    w_objects = [m1[0].weight, m1[0].bias, m1[1].weight, m1[1].bias]

    assert fastload.loadmodel(m1, m2) is m1

    assert_dense_equal(m1[0], m2[0])
    assert_dense_equal(m1[1], m2[1])
    assert m1[1].σ is relu
    assert m2[1].σ is identity
    # copied in place: the arrays are the ones the model had, not the source's
    after = [m1[0].weight, m1[0].bias, m1[1].weight, m1[1].bias]
    assert all(a is b for a, b in zip(after, w_objects))
    assert m1[0].weight is not m2[0].weight


def test_nested_parallel_loads_and_false_bias_is_not_overwritten():
    m5 = Chain(
        dense(10, 5), Parallel(operator.add, Dense(np.ones((2, 5), np.float32), False), dense(5, 2))
    )
    m6 = Chain(dense(10, 5), Parallel(operator.add, dense(5, 2), dense(5, 2)))

    fastload.loadmodel(m5, m6)

    assert_dense_equal(m5[0], m6[0])
    np.testing.assert_array_equal(m5[1].layers[0].weight, m6[1].layers[0].weight)
    assert m5[1].layers[0].bias is False
    assert_dense_equal(m5[1].layers[1], m6[1].layers[1])


def test_mismatched_layers_raise_argument_error():
    m1 = Chain(dense(10, 5), dense(5, 2, relu))
    m3 = Chain(Conv((3, 3), 3, 16), dense(5, 2))
    m5 = Chain(
        dense(10, 5), Parallel(operator.add, Dense(np.ones((2, 5), np.float32), False), dense(5, 2))
    )

    exc = assert_rejected(fastload.ArgumentError, m1, m3)
    assert "layers.0" in problem_paths(exc)
    exc = assert_rejected(fastload.ArgumentError, m1, m5)
    assert "layers.1" in problem_paths(exc)


def test_size_mismatch_raises_dimension_mismatch_and_lists_every_problem():
    m1 = Chain(dense(10, 5), dense(5, 2, relu))
    m4 = Chain(dense(10, 6), dense(6, 2))

    exc = assert_rejected(fastload.DimensionMismatch, m1, m4)

    assert problem_paths(exc) == {"layers.0.weight", "layers.0.bias", "layers.1.weight"}
    assert "Tried to load size" in str(exc)
    assert "layers.1.weight" in str(exc)


def test_batchnorm_running_stats_copied_functions_and_dropout_rate_kept():
    m1 = Chain(Conv((3, 3), 3, 16), BatchNorm(16), flatten, Dropout(0.2))
    m2 = Chain(
        Conv((3, 3), 3, 16), BatchNorm(16), lambda x: x.reshape(-1, x.shape[-1]), Dropout(0.1)
    )
    m2[1].μ[...] = RNG.random(16, dtype=np.float32)

    fastload.loadmodel(m1, m2)

    np.testing.assert_array_equal(m1[1].μ, m2[1].μ)
    np.testing.assert_array_equal(m1[1].var, m2[1].var)
    np.testing.assert_array_equal(m1[1].γ, m2[1].γ)
    np.testing.assert_array_equal(m1[1].β, m2[1].β)
    np.testing.assert_array_equal(m1[0].weight, m2[0].weight)
    np.testing.assert_array_equal(m1[0].bias, m2[0].bias)
    assert m1[2] is flatten
    assert m1[3].p == 0.2


def _legolas_layers(p, pool):
    return [
        Dropout(p),
        Conv((3, 3), 1, 32, relu),
        BatchNorm(32, relu),
        MaxPool(pool),
        Dropout(p),
        Conv((3, 3), 32, 16, relu),
        Dropout(p),
        MaxPool(pool),
        Dropout(p),
        Conv((3, 3), 16, 10, relu),
        Dropout(p),
        lambda x: x.reshape(-1, x.shape[3]),
        Dropout(p),
        dense(90, 10),
        softmax,
    ]


def test_tuple_chain_loads_from_list_chain_without_copying_modes_or_pool_sizes():
    chain1 = Chain(*_legolas_layers(0.2, (2, 2)))
    chain2 = Chain(_legolas_layers(0.1, (3, 3)))
    assert isinstance(chain1.layers, tuple) and isinstance(chain2.layers, list)
    chain2[2].μ[...] = 5
    chain2[2].var[...] = 2
    set_testmode(chain2)

    fastload.loadmodel(chain1, chain2)

    for dst, src in zip(chain1.layers, chain2.layers):
        if isinstance(dst, Dropout):
            assert dst.p == 0.2
            assert dst.active is None
        elif isinstance(dst, (Conv, Dense)):
            assert_dense_equal(dst, src)
        elif isinstance(dst, MaxPool):
            assert dst.k == (2, 2)
        elif isinstance(dst, BatchNorm):
            np.testing.assert_array_equal(dst.μ, np.full(32, 5, np.float32))
            np.testing.assert_array_equal(dst.var, np.full(32, 2, np.float32))
            assert dst.active is None
            assert dst.λ is relu
    assert chain1[-1] is softmax

    # copy only a subset of the model
    chain1[-2].weight[...] = 1
    chain1[2].μ[...] = 3
    chain1[1].bias[...] = 5
    fastload.loadmodel(chain2[-2], chain1[-2])
    fastload.loadmodel(chain2[2], chain1[2])
    np.testing.assert_array_equal(chain2[-2].weight, np.ones((10, 90), np.float32))
    np.testing.assert_array_equal(chain2[2].μ, np.full(32, 3, np.float32))
    assert not np.array_equal(chain2[1].bias, chain1[1].bias)
    assert chain2[2].active is False


def test_tied_weights_stay_tied_and_take_the_value():
    shared_dst = dense(10, 10)
    shared_src = dense(10, 10)
    m1 = Chain(shared_dst, Dense(shared_dst.weight))
    m2 = Chain(shared_src, Dense(shared_src.weight))

    fastload.loadmodel(m1, m2)

    assert m1[0].weight is m1[1].weight
    assert m1[0].weight is shared_dst.weight
    np.testing.assert_array_equal(m1[1].weight, m2[1].weight)
    assert_dense_equal(m1[0], m2[0])
    np.testing.assert_array_equal(m1[1].bias, m2[1].bias)


def test_tied_weights_from_equal_but_distinct_sources_load():
    shared = dense(4, 3)
    m1 = Chain(shared, Dense(shared.weight))
    w = randn(3, 4)
    m2 = Chain(Dense(w, randn(3)), Dense(w.copy(), randn(3)))

    fastload.loadmodel(m1, m2)

    assert m1[0].weight is m1[1].weight
    np.testing.assert_array_equal(m1[0].weight, w)


def test_tied_weights_from_mismatched_sources_raise_load_error():
    shared_dst = dense(10, 10)
    m1 = Chain(shared_dst, Dense(shared_dst.weight))
    m2 = Chain(dense(10, 10), dense(10, 10))

    exc = assert_rejected(fastload.LoadError, m1, m2)

    assert "layers.1.weight" in problem_paths(exc)
    assert "tied" in str(exc)


def test_tie_mismatch_is_reported_alongside_later_problems():
    shared = dense(4, 4)
    m1 = Chain(shared, Dense(shared.weight), dense(4, 2))
    m2 = Chain(dense(4, 4), dense(4, 4), dense(4, 3))

    exc = assert_rejected(fastload.LoadError, m1, m2)

    # the tie is the first problem in walk order; the size mismatch comes after it
    assert {"layers.1.weight", "layers.2.weight", "layers.2.bias"} <= problem_paths(exc)
    assert exc.problems[0][0] == "layers.1.weight"


def test_size_mismatch_first_then_tie_mismatch_lists_both():
    shared = dense(4, 4)
    m1 = Chain(dense(4, 2), shared, Dense(shared.weight))
    m2 = Chain(dense(4, 3), dense(4, 4), dense(4, 4))

    exc = assert_rejected(fastload.DimensionMismatch, m1, m2)

    assert {"layers.0.weight", "layers.2.weight"} <= problem_paths(exc)


def test_same_layer_object_twice_is_a_tie():
    layer = dense(3, 3)
    m1 = Chain(layer, layer)
    src_layer = dense(3, 3)
    fastload.loadmodel(m1, Chain(src_layer, src_layer))
    assert m1[0] is m1[1] is layer
    assert_dense_equal(layer, src_layer)

    assert_rejected(fastload.LoadError, m1, Chain(dense(3, 3), dense(3, 3)))


def test_tied_bias_accepts_absent_source_when_value_is_zero():
    b = np.ones(5, np.float32)
    m1 = Chain(Dense(randn(5, 10), b), Dense(randn(5, 5), b))
    m2 = Chain(Dense(randn(5, 10), np.zeros(5, np.float32)), Dense(randn(5, 5), False))

    fastload.loadmodel(m1, m2)

    assert m1[0].bias is m1[1].bias is b
    np.testing.assert_array_equal(b, np.zeros(5, np.float32))
    np.testing.assert_array_equal(m1[1].weight, m2[1].weight)

    # the absent parameter is bad when the tied value is not zero
    m2[0].bias[...] = 1
    assert_rejected(fastload.LoadError, m1, m2)


def test_tied_bias_loaded_absent_first_then_zeros_is_accepted():
    b = np.ones(5, np.float32)
    m1 = Chain(Dense(randn(5, 10), b), Dense(randn(5, 5), b))
    m2 = Chain(Dense(randn(5, 10), False), Dense(randn(5, 5), np.zeros(5, np.float32)))
    fastload.loadmodel(m1, m2)
    np.testing.assert_array_equal(b, np.zeros(5, np.float32))

    b[...] = 1
    m3 = Chain(Dense(randn(5, 10), False), Dense(randn(5, 5), np.full(5, 2, np.float32)))
    assert_rejected(fastload.LoadError, m1, m3)
    np.testing.assert_array_equal(b, np.ones(5, np.float32))


def test_filter_skips_dropout_on_either_side():
    m1 = Chain(dense(10, 5), dense(5, 2, relu))
    m2 = Chain(dense(10, 5), Dropout(0.2), dense(5, 2))
    m3 = Chain(dense(10, 5), dense(5, 2, relu))

    def not_dropout(x):
        return not isinstance(x, Dropout)

    # without the filter the chains do not match
    assert_rejected(fastload.ArgumentError, m1, m2)

    fastload.loadmodel(m1, m2, filter=not_dropout)
    assert_dense_equal(m1[0], m2[0])
    assert_dense_equal(m1[1], m2[2])

    fastload.loadmodel(m2, m3, filter=not_dropout)
    assert_dense_equal(m3[0], m2[0])
    assert_dense_equal(m3[1], m2[2])
    assert m2[1].p == 0.2


def test_filter_dropping_non_array_children():
    m1 = Chain(dense(4, 3), BatchNorm(3))
    src = {
        "layers": [
            {"weight": randn(3, 4), "bias": randn(3)},
            {"β": randn(3), "γ": randn(3), "μ": randn(3), "σ²": randn(3)},
        ]
    }

    def arrays_and_nodes(x):
        return isinstance(x, (np.ndarray, dict, list, tuple, Layer))

    # without the filter the key sets differ (σ, λ, ε, momentum, ... are missing)
    exc = assert_rejected(fastload.ArgumentError, m1, src)
    assert "layers.0" in problem_paths(exc)

    fastload.loadmodel(m1, src, filter=arrays_and_nodes)

    np.testing.assert_array_equal(m1[0].weight, src["layers"][0]["weight"])
    np.testing.assert_array_equal(m1[0].bias, src["layers"][0]["bias"])
    for key in ("β", "γ", "μ", "σ²"):
        np.testing.assert_array_equal(getattr(m1[1], key), src["layers"][1][key])
    assert m1[1].ε == 1e-5 and m1[1].chs == 3


def test_absent_bias_in_source_and_destination():
    m0 = Chain(Dense(np.ones((3, 2), np.float32), False), dense(3, 1))
    m1 = Chain(Dense(np.ones((3, 2), np.float32), randn(3)), dense(3, 1))
    m2 = Chain(
        Dense(np.array([[1, 2], [3, 4], [5, 6]], np.float32), np.array([7, 8, 9], np.float32)),
        dense(3, 1),
    )

    fastload.loadmodel(m1, m2)
    np.testing.assert_array_equal(m1[0].bias, [7, 8, 9])
    assert m1[0].weight.sum() == 21

    # load from a model without bias: the absent parameter is an all-zero one
    bias = m1[0].bias
    assert fastload.loadmodel(m1, m0) is m1
    assert m1[0].bias is bias
    np.testing.assert_array_equal(m1[0].bias, np.zeros(3, np.float32))
    assert m1[0].weight.sum() == 6

    # load into a model without bias: the parameter with no home is ignored
    fastload.loadmodel(m0, m2)
    assert m0[0].bias is False
    assert m0[0].weight.sum() == 21


def test_true_bias_cannot_load_or_be_loaded():
    m1 = Chain(dense(2, 3))
    assert_rejected(fastload.LoadError, m1, Chain(Dense(randn(3, 2), np.True_)))
    m_true = Chain(Dense(randn(3, 2), False))
    m_true[0].bias = True
    assert_rejected(fastload.LoadError, m_true, Chain(dense(2, 3)))
    assert_rejected(fastload.LoadError, m1, m_true)


def test_load_from_a_saved_flat_file(tmp_path):
    m1 = Chain(
        Dense(np.array([[1, 2], [3, 4], [5, 6]], np.float32), np.array([7, 8, 9], np.float32)),
        dense(3, 1),
    )
    m2 = Chain(Dense(np.zeros((3, 2), np.float32), np.zeros(3, np.float32)), dense(3, 1))
    assert not np.array_equal(m1[0].weight, m2[0].weight)

    flat = {path: obj for path, obj in _walk(m1) if isinstance(obj, np.ndarray)}
    np.savez(tmp_path / "m1.npz", **flat)
    nested = {}
    with np.load(tmp_path / "m1.npz") as f:
        for name in f.files:
            node = nested
            *parents, last = name.split(".")
            for part in parents:
                node = node.setdefault(part, {})
            node[last] = f[name]
    assert set(nested["layers"]) == {"0", "1"}

    # the file has no activation functions: the key sets differ
    exc = assert_rejected(fastload.ArgumentError, m2, nested)
    assert "layers.0" in problem_paths(exc)
    assert "σ" in str(exc)

    with pytest.warns(fastload.SkippedKeysWarning, match="layers.0: missing"):
        fastload.loadmodel(m2, nested, strict=False)
    assert_dense_equal(m2[0], m1[0])
    assert_dense_equal(m2[1], m1[1])
    assert m2[0].σ is identity


def test_float64_source_casts_into_float32_model():
    m1 = Chain(dense(3, 2))
    w = RNG.standard_normal((2, 3))
    b = RNG.standard_normal(2)
    fastload.loadmodel(m1, {"layers": [{"weight": w, "bias": b, "σ": ()}]})
    assert m1[0].weight.dtype == np.float32
    np.testing.assert_array_equal(m1[0].weight, w.astype(np.float32))
    np.testing.assert_array_equal(m1[0].bias, b.astype(np.float32))


def test_float_source_into_integer_destination_is_rejected_unless_unsafe():
    dst = {"w": np.arange(6, dtype=np.int32).reshape(2, 3)}
    src = {"w": np.full((2, 3), 2.5)}
    exc = assert_rejected(fastload.LoadError, dst, src)
    assert problem_paths(exc) == {"w"}
    fastload.loadmodel(dst, src, casting="unsafe")
    np.testing.assert_array_equal(dst["w"], np.full((2, 3), 2, np.int32))


def test_read_only_destination_is_rejected_before_anything_is_written():
    m1 = Chain(dense(3, 2), dense(2, 2))
    m1[1].weight.flags.writeable = False
    exc = assert_rejected(fastload.LoadError, m1, Chain(dense(3, 2), dense(2, 2)))
    assert "layers.1.weight" in problem_paths(exc)


def test_single_threaded_load_gives_the_same_result():
    m1 = Chain(dense(64, 32), BatchNorm(32), dense(32, 8))
    m2 = Chain(dense(64, 32), BatchNorm(32), dense(32, 8))
    fastload.loadmodel(m1, m2, threads=1)
    loaded = dict(_walk(m1))
    arrays = [(path, obj) for path, obj in _walk(m2) if isinstance(obj, np.ndarray)]
    assert len(arrays) == 8
    for path, obj in arrays:
        np.testing.assert_array_equal(loaded[path], obj, err_msg=path)


def test_root_may_be_an_array():
    a = np.zeros((2, 2), np.float32)
    b = randn(2, 2)
    assert fastload.loadmodel(a, b) is a
    np.testing.assert_array_equal(a, b)
    before = a.copy()
    with pytest.raises(fastload.DimensionMismatch):
        fastload.loadmodel(a, randn(3))
    np.testing.assert_array_equal(a, before)


# --------------------------------------------------------------------------- children


def test_children_of_layers_are_their_fields():
    d = dense(2, 3)
    kids = fastload.children(d)
    assert isinstance(kids, dict)
    assert set(kids) == {"weight", "bias", "σ"}
    assert kids["weight"] is d.weight
    assert fastload.children(d.weight) is None
    assert fastload.children(relu) is None
    chain_kids = fastload.children(Chain(d, d).layers)
    assert isinstance(chain_kids, tuple) and len(chain_kids) == 2


# --------------------------------------------------------------------------- state


def _m1_for_state():
    return Chain(
        dense(10, 5), Parallel(operator.add, Dense(np.ones((2, 5), np.float32), False), dense(5, 2))
    )


def test_state_mirrors_the_model_with_the_same_arrays():
    m1 = _m1_for_state()
    s = fastload.state(m1)

    assert type(s) is dict
    assert list(s) == ["layers"]
    assert type(s["layers"]) is tuple
    assert len(s["layers"]) == 2
    assert s["layers"][0]["weight"] is m1[0].weight
    assert s["layers"][0]["bias"] is m1[0].bias
    assert s["layers"][0]["σ"] == ()
    assert s["layers"][1]["connection"] == ()
    assert s["layers"][1]["layers"][0]["weight"] is m1[1].layers[0].weight
    assert s["layers"][1]["layers"][0]["bias"] is False


def test_model_loads_from_state_and_false_source_zeroes_bias():
    m1 = _m1_for_state()
    m2 = Chain(
        dense(10, 5),
        Parallel(
            operator.add, Dense(np.zeros((2, 5), np.float32), np.ones(2, np.float32)), dense(5, 2)
        ),
    )
    s = fastload.state(m1)

    fastload.loadmodel(m2, s)

    assert_dense_equal(m2[0], m1[0])
    np.testing.assert_array_equal(m2[1].layers[0].weight, np.ones((2, 5), np.float32))
    np.testing.assert_array_equal(m2[1].layers[0].bias, np.zeros(2, np.float32))
    assert_dense_equal(m2[1].layers[1], m1[1].layers[1])
    assert m2[1].connection is operator.add


def test_state_replaces_non_state_leaves_with_empty_tuple():
    assert fastload.state((1, math.tanh)) == (1, ())
    nt = collections.namedtuple("NT", ["a", "b"])
    assert fastload.state(nt(1, math.tanh)) == {"a": 1, "b": ()}
    assert type(fastload.state(nt(1, math.tanh))) is dict
    assert fastload.state({"a": 1, "b": math.tanh}) == {"a": 1, "b": ()}
    assert fastload.state([lambda x: x, relu, 2.5]) == [(), (), 2.5]

    x, y = np.ones((3, 2), np.float32), np.zeros((2, 2), np.float32)
    inner = collections.namedtuple("Inner", ["c", "d", "e"])
    tree = {"a": 1, "b": inner(x, (y, 1, (math.tanh,)), math.sin)}
    s = fastload.state(tree)
    assert list(s) == ["a", "b"] and s["a"] == 1
    assert type(s["b"]) is dict and list(s["b"]) == ["c", "d", "e"]
    assert s["b"]["c"] is x
    assert type(s["b"]["d"]) is tuple and len(s["b"]["d"]) == 3
    assert s["b"]["d"][0] is y
    assert s["b"]["d"][1:] == (1, ((),))
    assert s["b"]["e"] == ()


def test_state_tracks_active_flags_and_batchnorm_fields():
    m3 = Chain(dense(10, 5), Dropout(0.2), dense(5, 2), BatchNorm(2))
    set_trainmode(m3)
    s = fastload.state(m3)

    assert s["layers"][1]["active"] is True
    assert s["layers"][1]["p"] == 0.2
    assert s["layers"][1]["dims"] is None
    assert s["layers"][3]["λ"] == ()
    bn = m3[3]
    for k in ("β", "γ", "μ", "σ²"):
        assert s["layers"][3][k] is getattr(bn, k)
    for k in ("ε", "momentum", "affine", "track_stats", "active", "chs"):
        value = s["layers"][3][k]
        assert type(value) is type(getattr(bn, k)) and value == getattr(bn, k)
    assert set(s["layers"][3]) == set(vars(bn))


def test_state_preserves_plain_data():
    m = {
        "num": 1,
        "cnum": complex(1.2, 2),
        "str": "hello",
        "bytes": b"\x00\x01",
        "bool": True,
        "dict": {"a": 1, "b": 2},
        "tup": (1, 2, 3),
        "lst": [1.5, [None, False]],
        "sym": "a",
        "nth": None,
        "npscalar": np.float32(2.5),
        "npint": np.int64(-3),
    }
    s = fastload.state(m)
    assert s == m
    for key in m:
        assert type(s[key]) is type(m[key])
    assert type(s["lst"][1]) is list

    arr = np.array([1, 2, 3])
    s = fastload.state({"arr": arr, "tup": (arr,)})
    assert s["arr"] is arr and s["tup"][0] is arr


def test_state_of_dataclass_and_mapping_become_dicts_and_shared_arrays_stay_shared():
    @dataclasses.dataclass
    class Block:
        w: np.ndarray
        tied: np.ndarray
        act: object = relu

    w = randn(2, 2)
    s = fastload.state({"block": Block(w, w), "od": collections.OrderedDict(z=1, y=w)})
    assert type(s["block"]) is dict and list(s["block"]) == ["w", "tied", "act"]
    assert s["block"]["w"] is w and s["block"]["tied"] is w
    assert s["block"]["act"] == ()
    assert type(s["od"]) is dict and s["od"]["z"] == 1 and s["od"]["y"] is w

    shared = dense(3, 3)
    st = fastload.state(Chain(shared, Dense(shared.weight)))
    assert st["layers"][0]["weight"] is st["layers"][1]["weight"] is shared.weight


def test_state_tree_as_destination_refuses_an_array_where_a_function_was():
    m1 = Chain(dense(3, 2), softmax)
    s = fastload.state(m1)
    assert s["layers"][1] == ()
    m2 = Chain(dense(3, 2), randn(2))  # an array where m1 has a function

    exc = assert_rejected(fastload.LoadError, s, m2)

    assert "layers.1" in problem_paths(exc)


def test_loading_state_of_a_model_into_a_fresh_copy_round_trips():
    src = Chain(*_legolas_layers(0.1, (2, 2)))
    dst = Chain(*_legolas_layers(0.2, (2, 2)))
    fastload.loadmodel(dst, fastload.state(src))
    for (path, a), (_, b) in zip(_walk(dst), _walk(src)):
        if isinstance(a, np.ndarray):
            np.testing.assert_array_equal(a, b, err_msg=path)
    assert dst[0].p == 0.2
