"""Flat dotted keys and nested state, both ways."""

from __future__ import annotations

import threading
import types

import numpy as np
import pytest

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


def test_unflatten_builds_keys_of_any_depth_on_any_thread():
    def innermost(node, depth):
        for _ in range(depth):
            node = node["a"]
        return node

    for depth in (3000, 200_000):
        assert innermost(fastload.unflatten({".".join(["a"] * depth): 1}), depth) == 1
    outcome = []

    def run():
        nested = fastload.unflatten({".".join(["a"] * 9000): 1})
        outcome.append(innermost(nested, 9000))

    old = threading.stack_size(512 * 1024)
    try:
        thread = threading.Thread(target=run)
        thread.start()
        thread.join()
    finally:
        threading.stack_size(old)
    assert outcome == [1]


def test_a_deep_checkpoint_into_a_deep_model_on_a_small_stack_is_loaded_or_refused(tmp_path):
    def deep(depth, leaf):
        for _ in range(depth):
            leaf = [leaf]
        return leaf

    path = tmp_path / "deep.safetensors"
    fastload.save(path, deep(300, np.ones(2)))
    dst = deep(300, np.zeros(2))
    outcome = []

    def run():
        try:
            fastload.loadmodel(dst, path)
            outcome.append("ok")
        except (ValueError, fastload.ArgumentError) as e:
            outcome.append(str(e))

    old = threading.stack_size(512 * 1024)
    try:
        thread = threading.Thread(target=run)
        thread.start()
        thread.join()
    finally:
        threading.stack_size(old)
    inner = dst
    for _ in range(300):
        inner = inner[0]
    assert outcome == ["ok"] and inner.tolist() == [1, 1] or "nested" in outcome[0]
    fastload.loadmodel(dst, path)
    assert inner.tolist() == [1, 1]
