"""SPEC section 2: matching nodes, the leaf table, filter, strict, layouts."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import fastload
from fastload import ArgumentError, DimensionMismatch, LoadError, SkippedKeysWarning


def test_returns_dst_and_copies_in_place():
    w = np.zeros((2, 3), np.float32)
    model = {"w": w}
    assert fastload.loadmodel(model, {"w": np.ones((2, 3), np.float32)}) is model
    assert model["w"] is w
    np.testing.assert_array_equal(w, 1)


def test_root_arrays_load_directly():
    a = np.zeros(4)
    fastload.loadmodel(a, np.arange(4.0))
    np.testing.assert_array_equal(a, [0, 1, 2, 3])


def test_key_order_does_not_matter():
    dst = {"a": np.zeros(1), "b": np.zeros(2)}
    fastload.loadmodel(dst, {"b": np.full(2, 2.0), "a": np.full(1, 1.0)})
    np.testing.assert_array_equal(dst["a"], [1])
    np.testing.assert_array_equal(dst["b"], [2, 2])


class Layer:
    def __init__(self, w, b):
        self.w, self.b = w, b


@pytest.mark.parametrize("make_dst", [dict, Layer], ids=["dict", "object"])
@pytest.mark.parametrize("order", [["w", "b"], ["b", "w"]], ids=["same order", "other order"])
def test_dicts_and_objects_match_a_dict_in_any_key_order(make_dst, order):
    dst = {"layer": make_dst(w=np.zeros(2), b=np.zeros(2))}
    # Keys equal to the destination's, but other objects.
    values = {"w": np.full(2, 1.0), "b": np.full(2, 2.0)}
    src = {"layer": {"".join(list(k)): values[k] for k in order}}
    fastload.loadmodel(dst, src)
    layer = dst["layer"] if make_dst is dict else vars(dst["layer"])
    assert {k: list(v) for k, v in layer.items()} == {"w": [1, 1], "b": [2, 2]}
    # A shape mismatch names its path however the keys were matched.
    with pytest.raises(DimensionMismatch) as info:
        fastload.loadmodel(dst, {"layer": {k: np.ones(3) for k in order}})
    assert [path for path, _ in info.value.problems] == ["layer.w", "layer.b"]
    np.testing.assert_array_equal(layer["w"], 1)


class Four:
    def __init__(self, **children):
        self.__dict__.update(children)


@pytest.mark.parametrize("make_dst", [dict, Four], ids=["dict", "object"])
@pytest.mark.parametrize("third", ["leaf", "node"])
def test_keys_that_agree_in_order_then_differ_are_matched_by_key(make_dst, third, snapshot):
    # The first keys pair up in order and are planned as they are read; the rest are
    # matched by key, with each child visited once.
    def child(value):
        return value if third == "leaf" else {"x": value}

    def values(tree):
        return {k: float((v["x"] if isinstance(v, dict) else v)[0]) for k, v in tree}

    dst = make_dst(a=np.zeros(1), b=np.zeros(2), c=child(np.zeros(3)), d=np.zeros(4))
    src = {
        "a": np.full(1, 1.0),
        "b": np.full(2, 2.0),
        "d": np.full(4, 4.0),
        "c": child(np.full(3, 3.0)),
    }
    fastload.loadmodel(dst, src)
    tree = dst if make_dst is dict else vars(dst)
    assert values(tree.items()) == {"a": 1, "b": 2, "c": 3, "d": 4}

    # A problem in the part read in order is reported once, with those of the rest.
    snap = snapshot(tree)
    bad = {"a": np.ones(5), "b": np.ones(2), "x": np.ones(4), "c": child(np.ones(3))}
    with pytest.raises(ArgumentError) as info:
        fastload.loadmodel(dst, bad)
    problems = info.value.problems
    assert sorted(path for path, _ in problems) == ["<root>", "a"]
    (structure,) = [message for path, message in problems if path == "<root>"]
    assert "missing keys ['d']" in structure and "unexpected keys ['x']" in structure
    snap.assert_unchanged()

    # Leaves planned in order before the keys differ are not planned again: a tie met
    # there is checked once. (The first leaf of a dtype in a load is planned apart, so
    # one comes before.)
    shared = np.zeros(2)
    layer = make_dst(a=shared, b=shared, c=child(np.zeros(3)), d=np.zeros(4))
    dst = {"first": np.zeros(1), "layer": layer}
    layer_src = {"a": np.ones(2), "b": np.full(2, 2.0), "d": np.ones(4), "c": child(np.ones(3))}
    with pytest.raises(LoadError) as info:
        fastload.loadmodel(dst, {"first": np.ones(1), "layer": layer_src})
    assert [path for path, _ in info.value.problems] == ["layer.b"]
    np.testing.assert_array_equal(shared, 0)


def test_keys_of_any_hashable_type_match():
    dst = {1: np.zeros(1), (2, "x"): np.zeros(1), "a": np.zeros(1)}
    fastload.loadmodel(dst, {"a": np.ones(1), 1: np.full(1, 2.0), (2, "x"): np.full(1, 3.0)})
    assert [dst[k][0] for k in (1, (2, "x"), "a")] == [2, 3, 1]


def test_key_mismatch_names_node_missing_and_unexpected_keys(snapshot):
    dst = {"enc": {"w": np.zeros(2), "b": np.zeros(2)}}
    snap = snapshot(dst)
    with pytest.raises(ArgumentError) as info:
        fastload.loadmodel(dst, {"enc": {"w": np.ones(2), "bias": np.ones(2)}})
    ((path, message),) = info.value.problems
    assert path == "enc"
    assert "missing keys ['b']" in message and "unexpected keys ['bias']" in message
    assert "enc: " in str(info.value)
    snap.assert_unchanged()


def test_strict_false_skips_keys_on_one_side_only_and_reports_them():
    dst = {"w": np.zeros(2), "extra": np.zeros(1), "h": [{"b": np.zeros(1), "act": "relu"}]}
    src = {"w": np.ones(2), "other": np.ones(3), "h": [{"b": np.ones(1), "scale": 2.0}]}
    with pytest.warns(fastload.SkippedKeysWarning) as record:
        fastload.loadmodel(dst, src, strict=False)
    np.testing.assert_array_equal(dst["w"], 1)
    np.testing.assert_array_equal(dst["h"][0]["b"], 1)
    np.testing.assert_array_equal(dst["extra"], 0)
    [warning] = record
    assert warning.filename == __file__  # it points at the call
    report = warning.message
    assert report.skipped == [("<root>", ["extra"], ["other"]), ("h.0", ["act"], ["scale"])]
    assert "skipped 2 missing and 2 unexpected keys" in str(report)
    assert "h.0: missing ['act'], unexpected ['scale']" in str(report)


def test_strict_false_with_nothing_to_skip_is_silent():
    dst = {"w": np.zeros(2)}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fastload.loadmodel(dst, {"w": np.ones(2)}, strict=False)
    np.testing.assert_array_equal(dst["w"], 1)


def test_list_loads_from_tuple_and_back():
    dst = [np.zeros(1), (np.zeros(2),)]
    fastload.loadmodel(dst, (np.ones(1), [np.ones(2)]))
    assert all(np.all(a == 1) for a in (dst[0], dst[1][0]))


def test_sequence_length_mismatch_is_argument_error(snapshot):
    dst = {"layers": [np.zeros(1), np.zeros(1)]}
    snap = snapshot(dst)
    with pytest.raises(ArgumentError) as info:
        fastload.loadmodel(dst, {"layers": [np.ones(1)]})
    assert info.value.problems[0][0] == "layers"
    snap.assert_unchanged()


@pytest.mark.parametrize("keys", [[0, 1], ["0", "1"], [1, 0], ["1", "0"]])
def test_sequence_loads_from_index_keyed_mapping(keys):
    dst = [np.zeros(1), np.zeros(1)]
    src = {k: np.full(1, float(int(k)) + 5) for k in keys}
    fastload.loadmodel(dst, src)
    assert [a[0] for a in dst] == [5.0, 6.0]


def test_index_keyed_mapping_loads_from_sequence():
    dst = {"1": np.zeros(1), "0": np.zeros(1)}
    fastload.loadmodel(dst, [np.full(1, 5.0), np.full(1, 6.0)])
    assert dst["0"][0] == 5.0 and dst["1"][0] == 6.0


@pytest.mark.parametrize("keys", [[0, 2], ["a", "b"], ["00", "1"], [0]])
def test_sequence_against_other_keys_is_argument_error(keys, snapshot):
    dst = {"seq": [np.zeros(1), np.zeros(1)]}
    snap = snapshot(dst)
    with pytest.raises(ArgumentError) as info:
        fastload.loadmodel(dst, {"seq": {k: np.ones(1) for k in keys}})
    assert info.value.problems[0][0] == "seq"
    snap.assert_unchanged()


def test_strict_false_loads_a_sequence_from_the_indices_a_mapping_has():
    # unflatten(flatten([Dense, np.tanh, Dense])) has no key "1": tanh holds no arrays.
    dst = [{"w": np.zeros(2)}, np.tanh, {"w": np.zeros(2)}]
    src = {"0": {"w": np.ones(2)}, "2": {"w": np.full(2, 2.0)}, "extra": np.ones(1)}
    with pytest.warns(fastload.SkippedKeysWarning) as record:
        fastload.loadmodel(dst, src, strict=False)
    assert dst[0]["w"].tolist() == [1.0, 1.0] and dst[2]["w"].tolist() == [2.0, 2.0]
    assert record[0].message.skipped == [("<root>", ["1"], ["extra"])]


def test_strict_false_loads_the_indices_a_mapping_has_from_a_sequence():
    dst = {0: np.zeros(1), 2: np.zeros(1), "x": np.zeros(1)}
    with pytest.warns(fastload.SkippedKeysWarning) as record:
        fastload.loadmodel(dst, [np.ones(1), np.full(1, 5.0), np.full(1, 7.0)], strict=False)
    assert [dst[0][0], dst[2][0], dst["x"][0]] == [1.0, 7.0, 0.0]
    assert record[0].message.skipped == [("<root>", ["x"], [1])]


# --- the leaf table ------------------------------------------------------------------


def test_false_source_zeroes_the_destination():
    w = np.ones((2, 2))
    fastload.loadmodel({"bias": w}, {"bias": False})
    np.testing.assert_array_equal(w, 0)


def test_numpy_false_scalar_counts_as_false():
    w = np.ones(3, np.int16)
    fastload.loadmodel([w], [np.False_])
    np.testing.assert_array_equal(w, 0)


@pytest.mark.parametrize("falsy", [0, 0.0, None, "", ()])
def test_only_false_zeroes_not_other_falsy_values(falsy, snapshot):
    dst = {"w": np.ones(2)}
    snap = snapshot(dst)
    with pytest.raises(LoadError) as info:
        fastload.loadmodel(dst, {"w": falsy})
    assert "into an array destination" in info.value.problems[0][1]
    snap.assert_unchanged()


def test_true_source_into_array_is_load_error(snapshot):
    dst = {"w": np.ones(2)}
    snap = snapshot(dst)
    with pytest.raises(LoadError) as info:
        fastload.loadmodel(dst, {"w": True})
    assert type(info.value) is LoadError and info.value.problems[0][0] == "w"
    snap.assert_unchanged()


def test_false_destination_ignores_an_array_source():
    dst = {"w": np.zeros(1), "bias": False}
    fastload.loadmodel(dst, {"w": np.ones(1), "bias": np.ones(3)})
    assert dst["bias"] is False and dst["w"][0] == 1


def test_true_destination_refuses_an_array(snapshot):
    dst = {"w": np.zeros(1), "bias": True}
    snap = snapshot(dst)
    with pytest.raises(LoadError) as info:
        fastload.loadmodel(dst, {"w": np.ones(1), "bias": np.ones(3)})
    assert info.value.problems[0][0] == "bias"
    snap.assert_unchanged()


def test_array_into_a_non_array_leaf_is_load_error(snapshot):
    dst = {"w": np.zeros(1), "act": np.tanh}
    snap = snapshot(dst)
    with pytest.raises(LoadError, match="Tried to copy an array to"):
        fastload.loadmodel(dst, {"w": np.ones(1), "act": np.ones(2)})
    snap.assert_unchanged()


def test_non_array_leaves_need_not_match():
    dst = {"act": np.tanh, "rate": 0.5, "flag": True, "name": "a", "w": np.zeros(1)}
    src = {"act": None, "rate": "fast", "flag": 3, "name": {"nested": 1}, "w": np.ones(1)}
    fastload.loadmodel(dst, src)
    assert dst["act"] is np.tanh and dst["rate"] == 0.5 and dst["w"][0] == 1


def test_array_destination_against_a_node_is_load_error(snapshot):
    dst = {"w": np.zeros(2)}
    snap = snapshot(dst)
    with pytest.raises(LoadError, match="into an array destination"):
        fastload.loadmodel(dst, {"w": [1.0, 2.0]})
    snap.assert_unchanged()


def test_node_against_a_leaf_is_argument_error(snapshot):
    dst = {"layer": {"w": np.zeros(2)}}
    snap = snapshot(dst)
    with pytest.raises(ArgumentError) as info:
        fastload.loadmodel(dst, {"layer": np.ones(2)})
    assert info.value.problems[0][0] == "layer"
    snap.assert_unchanged()


@pytest.mark.parametrize("empty", [(), [], {}])
def test_an_empty_node_is_a_leaf_that_refuses_an_array(empty, snapshot):
    dst = {"w": np.zeros(1), "act": empty}
    snap = snapshot(dst)
    with pytest.raises(LoadError, match="Tried to copy an array to") as info:
        fastload.loadmodel(dst, {"w": np.ones(1), "act": np.ones(2)})
    assert info.value.problems[0][0] == "act"
    snap.assert_unchanged()


def test_a_node_whose_children_are_all_filtered_out_matches_a_leaf():
    dst = {"x": [1, 2], "w": np.zeros(1)}
    fastload.loadmodel(dst, {"x": "five", "w": np.ones(1)}, filter=lambda c: not isinstance(c, int))
    assert dst["w"][0] == 1 and dst["x"] == [1, 2]


def test_empty_node_against_a_leaf_is_fine():
    dst = {"layer": {}, "w": np.zeros(1)}
    fastload.loadmodel(dst, {"layer": 3, "w": np.ones(1)})
    assert dst["w"][0] == 1


def test_shape_mismatch_message_is_fluxs(snapshot):
    dst = {"layers": [{"weight": np.zeros((3, 4))}]}
    snap = snapshot(dst)
    with pytest.raises(DimensionMismatch) as info:
        fastload.loadmodel(dst, {"layers": [{"weight": np.zeros((4, 3))}]})
    assert info.value.problems == [
        ("layers.0.weight", "Tried to load size (4, 3) array into size (3, 4)")
    ]
    snap.assert_unchanged()


# --- filter ----------------------------------------------------------------------------


def test_filter_drops_children_on_both_sides_and_renumbers():
    dst = [np.zeros(1), "dropout", np.zeros(2)]
    src = [np.ones(1), np.ones(2) * 2]
    fastload.loadmodel(dst, src, filter=lambda x: not isinstance(x, str))
    np.testing.assert_array_equal(dst[0], [1])
    np.testing.assert_array_equal(dst[2], [2, 2])


def test_a_filtered_sequence_problem_is_named_by_the_index_it_had(snapshot):
    dst = [np.tanh, np.zeros(2), np.tanh, np.zeros(3)]
    before = snapshot(dst)
    with pytest.raises(DimensionMismatch) as info:
        fastload.loadmodel(dst, [np.ones(2), np.ones(2)], filter=lambda c: not callable(c))
    assert info.value.problems[0][0] == "3"
    before.assert_unchanged()


# What `state`, `load` and a file give for a list: a mapping keyed by its indices, `()` for
# a function. The filter the README gives for them drops both.
def keep_arrays(child):
    return not (callable(child) or (type(child) is tuple and not child))


def assert_layers_load_from(src, strict):
    """Layers 1 and 3 of four, between functions the filter drops, load 1s and 2s from
    ``src`` and nothing is skipped."""
    dst = [np.tanh, np.zeros(2), np.tanh, np.zeros(2)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing is skipped
        fastload.loadmodel(dst, src, filter=keep_arrays, strict=strict)
    assert dst[1].tolist() == [1.0, 1.0] and dst[3].tolist() == [2.0, 2.0]


@pytest.mark.parametrize("strict", [True, False])
@pytest.mark.parametrize("source", ["mapping", "file"])
def test_a_filtered_sequence_loads_from_the_keys_of_the_indices_it_kept(tmp_path, strict, source):
    """The mapping is keyed by the list's own indices, which a filter does not renumber:
    layer 3 loads from key "3", never from "1"."""
    layers = [np.tanh, np.full(2, 1.0), np.tanh, np.full(2, 2.0)]
    src = {"0": (), "1": layers[1], "2": (), "3": layers[3]}
    if source == "file":
        src = tmp_path / "layers.safetensors"
        fastload.save(src, layers)
    assert_layers_load_from(src, strict)


def test_a_filtered_sequence_and_a_mapping_of_other_indices_do_not_match(snapshot):
    dst = [np.tanh, np.zeros(2), np.tanh, np.zeros(2)]
    src = {"0": (), "1": np.ones(2), "2": np.ones(2), "3": ()}
    before = snapshot(dst)
    with pytest.raises(ArgumentError, match=r"indices the filter kept \(1, 3\)"):
        fastload.loadmodel(dst, src, filter=keep_arrays)
    before.assert_unchanged()
    with pytest.warns(SkippedKeysWarning) as warned:
        fastload.loadmodel(dst, src, filter=keep_arrays, strict=False)
    assert warned[0].message.skipped == [("<root>", ["3"], ["2"])]
    assert dst[1].tolist() == [1.0, 1.0] and not dst[3].any()


def test_a_mapping_keyed_by_indices_loads_from_a_filtered_sequence_by_those_indices():
    dst = {"0": (), "1": np.zeros(2), "2": (), "3": np.zeros(2)}
    fastload.loadmodel(dst, [np.tanh, np.ones(2), np.tanh, 2 * np.ones(2)], filter=keep_arrays)
    assert dst["1"].tolist() == [1.0, 1.0] and dst["3"].tolist() == [2.0, 2.0]


@pytest.mark.parametrize("strict", [True, False])
@pytest.mark.parametrize("keys", ["str", "int", "file"])
def test_a_filtered_sequence_loads_from_a_mapping_renumbered_as_it_is(tmp_path, strict, keys):
    """A mapping keyed 0..m-1 for the m children a filter kept (a file saved from a model
    without the dropped layers) loads by position, as two sequences do."""
    arrays = [np.full(2, 1.0), np.full(2, 2.0)]
    src = {0: arrays[0], 1: arrays[1]} if keys == "int" else {"0": arrays[0], "1": arrays[1]}
    if keys == "file":
        src = tmp_path / "kept.safetensors"
        fastload.save(src, arrays)
    assert_layers_load_from(src, strict)


def test_under_strict_false_a_whole_match_by_position_wins_over_part_of_one_by_index():
    """Keys 0 and 1 for the two children kept of three: by position both load, where by
    index only key 1 would, into the first of them."""
    dst = [np.tanh, np.zeros(2), np.zeros(2)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing is skipped
        fastload.loadmodel(
            dst, {"0": np.ones(2), "1": 2 * np.ones(2)}, filter=keep_arrays, strict=False
        )
    assert dst[1].tolist() == [1.0, 1.0] and dst[2].tolist() == [2.0, 2.0]


def test_a_renumbered_mapping_loads_from_a_filtered_sequence_by_position():
    dst = {"0": np.zeros(2), "1": np.zeros(2)}
    fastload.loadmodel(dst, [np.tanh, np.ones(2), np.tanh, 2 * np.ones(2)], filter=keep_arrays)
    assert dst["0"].tolist() == [1.0, 1.0] and dst["1"].tolist() == [2.0, 2.0]


def test_a_filtered_sequence_refuses_a_mapping_keyed_neither_by_index_nor_by_position():
    dst = [np.zeros(2), np.tanh, np.zeros(2)]
    with pytest.raises(ArgumentError, match=r"indices the filter kept \(0, 2\) or 0\.\.1"):
        fastload.loadmodel(dst, {"1": np.ones(2), "2": np.ones(2)}, filter=keep_arrays)
    assert not dst[0].any() and not dst[2].any()
    src = {"0": np.ones(2), "2": 2 * np.ones(2)}
    fastload.loadmodel(dst, src, filter=keep_arrays)
    assert dst[0].tolist() == [1.0, 1.0] and dst[2].tolist() == [2.0, 2.0]


def test_filter_is_never_applied_to_the_root():
    calls = []

    def keep(x):
        calls.append(x)
        return True

    dst = {"w": np.zeros(1)}
    src = {"w": np.ones(1)}
    fastload.loadmodel(dst, src, filter=keep)
    assert all(c is not dst and c is not src for c in calls)
    assert len(calls) == 2


def test_filter_can_skip_arrays_by_shape():
    dst = {"w": np.zeros(2), "frozen": np.zeros(5)}
    src = {"w": np.ones(2), "frozen": np.ones(5)}
    fastload.loadmodel(dst, src, filter=lambda x: not (isinstance(x, np.ndarray) and x.size == 5))
    assert dst["w"][0] == 1 and dst["frozen"][0] == 0


# --- layouts ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make_dst",
    [
        lambda: np.zeros((5, 7), order="F"),
        lambda: np.zeros((5, 14))[:, ::2],
        lambda: np.zeros((5, 7))[::-1, ::-1],
        lambda: np.zeros((7, 5)).T,
        lambda: np.zeros((5, 7), dtype=">f8"),
    ],
    ids=["fortran", "strided", "reversed", "transposed", "big-endian"],
)
@pytest.mark.parametrize(
    "make_src",
    [
        lambda v: v.copy(),
        lambda v: np.asfortranarray(v),
        lambda v: v[::-1][::-1].copy()[::-1, :][::-1, :],
        lambda v: np.ascontiguousarray(v.T).T,
        lambda v: v.astype(">f8"),
    ],
    ids=["c", "fortran", "reversed", "transposed", "big-endian"],
)
@pytest.mark.parametrize("wrap", [lambda a: a, lambda a: {"w": [a]}], ids=["root", "child"])
def test_any_layout_loads_into_any_layout(make_dst, make_src, wrap):
    values = np.arange(35.0).reshape(5, 7) * 1.5
    dst = make_dst()
    fastload.loadmodel(wrap(dst), wrap(make_src(values)))
    np.testing.assert_array_equal(dst, values)


def test_contiguous_arrays_with_any_stride_on_unit_axes_load_exactly():
    # NumPy calls these C-contiguous whatever the strides of their length-1 axes.
    as_strided = np.lib.stride_tricks.as_strided
    src = as_strided(np.arange(6, dtype=np.float32), shape=(1, 6, 1), strides=(4000, 4, -8))
    target = np.full(20, -1, np.float32)
    dst = as_strided(target[7:], shape=(1, 6, 1), strides=(12, 4, 4096), writeable=True)
    assert src.flags.c_contiguous and dst.flags.c_contiguous
    fastload.loadmodel({"w": dst}, {"w": src})
    np.testing.assert_array_equal(target[7:13], np.arange(6))
    assert (target[:7] == -1).all() and (target[13:] == -1).all()


def test_a_source_shifted_over_its_destination_reads_before_writing():
    a = np.arange(8, dtype=np.float32)
    expected = a.copy()
    np.copyto(expected[1:], expected[:-1])
    fastload.loadmodel({"w": a[1:]}, {"w": a[:-1]})
    np.testing.assert_array_equal(a, expected)


def test_zero_size_and_zero_dimensional_arrays():
    dst = {"empty": np.zeros((0, 3)), "scalar": np.zeros(())}
    fastload.loadmodel(dst, {"empty": np.ones((0, 3)), "scalar": np.array(4.0)})
    assert dst["scalar"] == 4.0 and dst["empty"].shape == (0, 3)


def test_string_bytes_and_structured_arrays_copy_when_dtypes_match():
    rec = np.dtype([("a", "i4"), ("b", "f8")])
    dst = {"s": np.array(["", ""], "U5"), "b": np.zeros(2, "S3"), "r": np.zeros(2, rec)}
    src = {
        "s": np.array(["hello", "x"], "U5"),
        "b": np.array([b"abc", b"d"], "S3"),
        "r": np.array([(1, 2.5), (3, 4.5)], rec),
    }
    fastload.loadmodel(dst, src)
    assert list(dst["s"]) == ["hello", "x"] and list(dst["b"]) == [b"abc", b"d"]
    assert dst["r"]["b"][1] == 4.5


@pytest.mark.parametrize(
    "dst,src",
    [
        (np.array(["a"], "U5"), np.array(["a"], "U4")),
        (np.zeros(1, "S3"), np.zeros(1, "U3")),
        (np.zeros(1, "f4"), np.array(["1"], "U1")),
        (np.zeros(1, [("a", "i4")]), np.zeros(1, [("b", "i4")])),
    ],
)
def test_casts_involving_strings_or_records_are_load_errors(dst, src, snapshot):
    snap = snapshot(dst)
    with pytest.raises(LoadError, match="same dtype"):
        fastload.loadmodel({"x": dst}, {"x": src}, casting="unsafe")
    snap.assert_unchanged()


def test_object_arrays_against_each_other_are_plain_leaves():
    dst = np.array([1, "a"], dtype=object)
    fastload.loadmodel({"o": dst}, {"o": np.array([None, None], dtype=object)})
    assert list(dst) == [1, "a"]


@pytest.mark.parametrize("side", ["dst", "src"])
def test_object_array_against_numeric_is_load_error(side, snapshot):
    obj = np.array([1.0, 2.0], dtype=object)
    num = np.zeros(2)
    dst, src = ({"o": obj}, {"o": num}) if side == "dst" else ({"o": num}, {"o": obj})
    snap = snapshot(dst)
    with pytest.raises(LoadError) as info:
        fastload.loadmodel(dst, src)
    assert info.value.problems[0][0] == "o" and "object array" in info.value.problems[0][1]
    snap.assert_unchanged()


@pytest.mark.parametrize("threads", [None, 1, 2, 7, 2**64, np.int64(2)])
def test_thread_counts_give_identical_results(threads):
    rng = np.random.default_rng(1)
    src = [rng.normal(size=(256, 1024)).astype(np.float32) for _ in range(8)]
    dst = [np.zeros((1024, 256), np.float64).T for _ in range(8)]
    fastload.loadmodel(dst, src, threads=threads)
    for d, s in zip(dst, src):
        np.testing.assert_array_equal(d, s)


@pytest.mark.parametrize(
    "threads, error",
    [(0, ValueError), (-1, ValueError), (1.5, TypeError), (True, TypeError), ("2", TypeError)]
    + [(np.True_, TypeError), (np.float64(2), TypeError)],
)
def test_bad_thread_counts_are_refused(threads, error):
    with pytest.raises(error, match="threads must be a positive integer or None"):
        fastload.loadmodel(np.zeros(1), np.zeros(1), threads=threads)


@pytest.mark.parametrize(
    "dst, src",
    [
        ([np.zeros(1), np.zeros(1)], {"0": np.ones(1), 1: np.ones(1)}),
        ({"0": np.zeros(1), 1: np.zeros(1)}, [np.ones(1), np.ones(1)]),
    ],
    ids=["sequence from mixed keys", "mixed keys from a sequence"],
)
def test_a_sequence_matches_keys_all_ints_or_all_strings_not_a_mix(dst, src, snapshot):
    before = snapshot(dst)
    with pytest.raises(fastload.ArgumentError, match="expected the keys 0..1"):
        fastload.loadmodel(dst, src)
    before.assert_unchanged()


def test_filter_must_be_callable():
    with pytest.raises(TypeError, match="filter"):
        fastload.loadmodel(np.zeros(1), np.zeros(1), filter=3)


def test_a_report_of_many_skipped_keys_lists_the_first_and_counts_the_rest():
    dst = {f"k{i}": np.zeros(1) for i in range(25)}
    dst["n"] = [{"a": np.zeros(1)} for _ in range(40)]
    src = {"n": [{"b": np.ones(1)} for _ in range(40)]}
    with pytest.warns(fastload.SkippedKeysWarning) as record:
        fastload.loadmodel(dst, src, strict=False)
    report = record[0].message
    assert len(report.skipped) == 41 and len(report.skipped[0][1]) == 25
    text = str(report)
    assert text.startswith("strict=False skipped 65 missing and 40 unexpected keys:")
    assert "'k9'] (and 15 more)" in text and "'k10'" not in text
    assert text.endswith("... and 11 more nodes")


def test_an_empty_sequence_against_a_mapping_expects_no_keys(snapshot):
    dst = {"m": {"w": np.zeros(2)}}
    before = snapshot(dst)
    with pytest.raises(fastload.ArgumentError, match=r"sequence of 0 children.*expected no keys"):
        fastload.loadmodel(dst, {"m": ()})
    before.assert_unchanged()
