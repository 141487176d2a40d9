"""Flat dotted keys and nested state, both ways."""

from __future__ import annotations

import re
import types
from collections.abc import Mapping

import numpy as np
import pytest
from safetensors.numpy import save_file

import fastload


def test_unflatten_makes_nodes_only_of_keys_and_takes_any_mapping():
    # A value that is a dict is a value: keys below it are refused, and it is not filled.
    value = {}
    with pytest.raises(ValueError, match="which holds a value"):
        fastload.unflatten({"a": value, "a.b": 1})
    assert value == {}
    assert fastload.unflatten({"a": value})["a"] is value
    proxy = types.MappingProxyType({"x.y": 1, "x.z": 2, "w": 3})
    assert fastload.unflatten(proxy) == {"x": {"y": 1, "z": 2}, "w": 3}
    assert list(fastload.unflatten({"b.x": 1, "a": 2, "b.y": 3})) == ["b", "a"]


def test_flatten_names_keys_by_their_str_and_items_by_their_index():
    tree = {1: np.ones(2), "seq": (np.zeros(1), [np.ones(1)]), "empty": {}, "act": np.tanh}
    flat = fastload.flatten(tree)
    # A function's state is `()`, a node without leaves, like the empty dict.
    assert list(flat) == ["1", "seq.0", "seq.1.0"]
    assert flat["1"] is tree[1] and flat["seq.1.0"] is tree["seq"][1][0]


def test_unflatten_builds_keys_of_any_depth_on_any_thread(on_small_stack):
    def innermost(node, depth):
        for _ in range(depth):
            node = node["a"]
        return node

    for depth in (3000, 200_000):
        assert innermost(fastload.unflatten({".".join(["a"] * depth): 1}), depth) == 1
    nested = on_small_stack(lambda: fastload.unflatten({".".join(["a"] * 9000): 1}))
    assert innermost(nested, 9000) == 1


def test_a_deep_checkpoint_into_a_deep_model_on_a_small_stack_is_loaded_or_refused(
    tmp_path, on_small_stack
):
    def deep(depth, leaf):
        for _ in range(depth):
            leaf = [leaf]
        return leaf

    path = tmp_path / "deep.safetensors"
    fastload.save(path, deep(300, np.ones(2)))
    dst = deep(300, np.zeros(2))
    inner = dst
    for _ in range(300):
        inner = inner[0]
    outcome = on_small_stack(
        lambda: fastload.loadmodel(dst, path), (ValueError, fastload.ArgumentError)
    )
    if isinstance(outcome, Exception):
        assert "nested" in str(outcome) and not inner.any()
    else:
        assert inner.tolist() == [1, 1]
    fastload.loadmodel(dst, path)
    assert inner.tolist() == [1, 1]


@pytest.mark.parametrize(
    "tree, path",
    [
        ({"": {"w": np.ones(2)}, "w": np.zeros(3)}, ".w"),
        ({"a": {"": np.ones(2)}}, "a."),
        ({"": {"": 1}}, "."),
        (np.ones(3), ""),
    ],
    ids=["an empty key above", "an empty key below", "empty keys", "a leaf at the root"],
)
def test_flatten_refuses_paths_with_empty_parts_as_unflatten_and_save_do(tmp_path, tree, path):
    with pytest.raises(ValueError, match=f"key {path!r} has an empty part"):
        fastload.flatten(tree)
    with pytest.raises(ValueError, match=f"key {path!r} has an empty part"):
        fastload.save(tmp_path / "empty.safetensors", tree)
    assert not any(tmp_path.iterdir())


def test_a_file_with_empty_parts_in_its_names_is_refused_by_load(tmp_path):
    path = tmp_path / "empty.safetensors"
    save_file({".w": np.ones(2), "w": np.zeros(3)}, str(path))
    with pytest.raises(fastload.LoadError, match="empty part"):
        fastload.load(path)


@pytest.mark.parametrize("keys", [(1, "1"), (None, "None"), ((1, 2), "(1, 2)")])
def test_flatten_refuses_two_keys_named_the_same_rather_than_drop_one(keys):
    tree = {"m": {keys[0]: np.zeros(2), keys[1]: np.ones(2)}}
    with pytest.raises(
        ValueError, match=re.escape(f"two entries flatten to the path 'm.{keys[1]}'")
    ):
        fastload.flatten(tree)


def test_unflatten_reads_a_mapping_through_its_items_and_says_what_is_wrong_as_python_would():
    class Renamed(dict):
        def items(self):
            return [("z", 9)]

    class Lists(Mapping):
        def __init__(self, d):
            self.d = d

        def __getitem__(self, key):
            return self.d[key]

        def __iter__(self):
            return iter(self.d)

        def __len__(self):
            return len(self.d)

        def items(self):
            return [[k, v] for k, v in self.d.items()]

    assert fastload.unflatten(Renamed({"a.b": 1})) == {"z": 9}
    assert fastload.unflatten(Lists({"a.b": 1})) == {"a": {"b": 1}}
    for flat, message in (
        ({"a": 1, "a.b": 2}, "key 'a.b' is below 'a', which holds a value"),
        ({"a.b": 2, "a": 1}, "key 'a' is also the prefix of other keys"),
        ({"a..b": 1}, "key 'a..b' has an empty part between separators '.'"),
    ):
        with pytest.raises(ValueError) as info:
            fastload.unflatten(flat)
        assert str(info.value) == message
    with pytest.raises(ValueError) as info:
        fastload.flatten({"a.b": 1})
    assert str(info.value) == "key 'a.b' contains the separator '.'"


@pytest.mark.parametrize("tree", [{"a:": {"b": 1}}, {"a": {":b": 1}}, {"a": {"b:": {"c": 1}}}])
def test_flatten_refuses_keys_that_a_separator_of_several_characters_would_split_elsewhere(
    tree,
):
    with pytest.raises(ValueError, match="begins or ends with part of the separator '::'"):
        fastload.flatten(tree, sep="::")
    flat = fastload.flatten({"a": {"b:c": 1}}, sep="::")  # inside a key: unambiguous
    assert flat == {"a::b:c": 1}
    assert fastload.unflatten(flat, sep="::") == {"a": {"b:c": 1}}
    with pytest.raises(ValueError, match=r"key 'a\\ud800.b' holds a lone surrogate"):
        fastload.unflatten({"a\ud800.b": 1})
    with pytest.raises(ValueError, match=r"key 'a\\ud800' holds a lone surrogate"):
        fastload.flatten({"m": {"a\ud800": 1}})


def test_a_key_whose_str_changes_the_dict_being_flattened_does_not_break_the_walk():
    # `flatten` reads a state, whose dicts are its own; the core function is given a dict
    # of the caller's here, so that a key's `str` can reach it.
    from fastload import _fastload

    state = {}

    class Meddling:
        def __str__(self):
            state["later"] = np.ones(1)
            return "meddling"

    state[Meddling()] = first = np.zeros(1)
    flat = _fastload.flatten(state, ".")
    assert flat == {"meddling": first}
    assert "later" in state


def test_a_tied_array_stored_under_its_later_name_fills_the_first(tmp_path):
    w = np.arange(6, dtype=np.float32).reshape(2, 3)
    path = tmp_path / "tied.safetensors"
    save_file({"head.weight": w, "bias": np.ones(3, np.float32)}, str(path))
    emb = np.zeros((2, 3), np.float32)
    dst = {"wte": emb, "head": {"weight": emb, "act": np.tanh}, "bias": np.zeros(3, np.float32)}
    fastload.loadmodel(dst, path)
    np.testing.assert_array_equal(emb, w)
    assert dst["head"]["act"] is np.tanh


def test_arrays_tied_through_their_memory_fill_each_other_from_a_file(tmp_path):
    base = np.zeros((2, 3), np.float32)
    # Two views of one memory alike are one tied parameter; a transposed view is not.
    dst = {"wte": base[:], "head": {"weight": base[:]}, "t": base.T}
    w = np.arange(6, dtype=np.float32).reshape(2, 3)
    path = tmp_path / "tied.safetensors"
    save_file({"head.weight": w}, str(path))
    fastload.loadmodel({"wte": dst["wte"], "head": dst["head"]}, path)
    np.testing.assert_array_equal(base, w)
    before = base.copy()
    with pytest.raises(fastload.ArgumentError, match=r"missing keys \['t'\]"):
        fastload.loadmodel(dst, path)
    np.testing.assert_array_equal(base, before)


def _shape_of(nested):
    """A nested source as sorted pairs, its leaves by identity: what the walk reads."""
    if isinstance(nested, dict):
        return sorted((str(k), _shape_of(v)) for k, v in nested.items())
    if isinstance(nested, (list, tuple)):
        return [_shape_of(v) for v in nested]
    return id(nested)


def _nested_both_ways(dst, flat):
    """A flat source nested for ``dst`` by the one-pass nesting (a dict) and by the general
    one (the same entries behind a read-only mapping), or the errors they raise."""
    from fastload import _flat

    results = []
    for source in (flat, types.MappingProxyType(flat)):
        try:
            results.append(_shape_of(_flat.flat_source(dst, source)))
        except ValueError as err:
            results.append(str(err))
    return results


def _model():
    w = np.ones((2, 2), np.float32)
    return {
        "wte": w,
        "h": [{"w": np.zeros(3), "act": "relu", "cfg": {"rate": 0.1}}, {"w": np.zeros(3)}],
        "head": {"weight": w, "bias": None},
        "empty": {},
        "pair": (np.zeros(1), 7),
    }


@pytest.mark.parametrize(
    "edit",
    [
        lambda flat: None,  # every array named
        lambda flat: flat.pop("head.weight"),  # a tie stored once
        lambda flat: flat.pop("h.1.w"),  # a missing array
        lambda flat: flat.update({"h.0.act": np.ones(1)}),  # a non-array leaf named
        lambda flat: flat.update({"extra": np.ones(1)}),  # a key no leaf has
        lambda flat: flat.update({"h.0.w.x": np.ones(1)}),  # below a leaf
        lambda flat: flat.update({"h.0.cfg": np.ones(1)}),  # at a node
        lambda flat: flat.update({"a..b": np.ones(1)}),  # an empty part
    ],
)
def test_a_flat_source_is_nested_alike_whether_or_not_it_names_every_array(edit):
    dst = _model()
    flat = {
        k: v
        for k, v in fastload.flatten(fastload.state(_model())).items()
        if isinstance(v, np.ndarray)
    }
    edit(flat)
    fast, general = _nested_both_ways(dst, flat)
    assert fast == general


def test_a_destination_key_with_a_dot_is_refused_as_before():
    dst = {"a.b": np.zeros(2)}
    fast, general = _nested_both_ways(dst, {"a.b": np.ones(2)})
    assert fast == general and "separator" in fast
