"""The public API: exports, docstring examples, and the type stub of the extension."""

from __future__ import annotations

import ast
import copy
import doctest
import inspect
import pickle
import typing
from pathlib import Path

import numpy as np
import pytest

import fastload
import fastload._flat
import fastload._tree
from fastload import _fastload

PUBLIC = {
    "ArgumentError",
    "DimensionMismatch",
    "LoadError",
    "SkippedKeysWarning",
    "children",
    "flatten",
    "load",
    "loadmodel",
    "register",
    "register_leaf",
    "save",
    "state",
    "unflatten",
}


def test_public_names_are_exported_with_docstrings():
    assert set(fastload.__all__) == PUBLIC
    for name in PUBLIC:
        obj = getattr(fastload, name)
        assert obj.__doc__ and obj.__doc__.strip(), name


def test_docstring_examples_run():
    for module in (fastload, fastload._tree, fastload._flat):
        result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
        assert result.failed == 0
        assert result.attempted > 0


def stub_functions():
    stub = Path(fastload.__file__).with_name("_fastload.pyi")
    tree = ast.parse(stub.read_text())
    functions = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}
    constants = {
        n.target.id
        for n in tree.body
        if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name)
    }
    classes = {n.name for n in tree.body if isinstance(n, ast.ClassDef)}
    return functions, constants | classes


def test_stub_matches_the_extension_module():
    functions, constants = stub_functions()
    public = {n for n in dir(_fastload) if not n.startswith("_")}
    assert public == set(functions) | constants
    for name, node in functions.items():
        stub_params = [a.arg for a in node.args.args + node.args.kwonlyargs]
        real_params = list(inspect.signature(getattr(_fastload, name)).parameters)
        assert stub_params == real_params, name


def test_package_is_typed():
    assert Path(fastload.__file__).with_name("py.typed").exists()


def test_the_namespace_holds_the_public_api_only():
    # Submodules (errors, demo) are attributes once imported.
    names = {n for n in dir(fastload) if not inspect.ismodule(getattr(fastload, n))}
    assert {n for n in names if not n.startswith("_")} == PUBLIC


@pytest.mark.parametrize("function", [fastload.loadmodel, fastload.save, fastload.load])
def test_annotations_resolve_at_runtime(function):
    hints = typing.get_type_hints(function)
    assert "path" in hints or "casting" in hints


def test_errors_and_warnings_pickle_and_copy_with_what_they_hold():
    error = fastload.DimensionMismatch("1 problem", [("a.w", "Tried to load size (2,)")])
    back = pickle.loads(pickle.dumps(error))
    assert type(back) is fastload.DimensionMismatch
    assert (str(back), back.problems) == (str(error), error.problems)
    warning = fastload.SkippedKeysWarning([("a", ["x"], ["y"])])
    for back in (pickle.loads(pickle.dumps(warning)), copy.copy(warning)):
        assert (back.skipped, str(back)) == (warning.skipped, str(warning))


def test_arguments_of_the_wrong_type_are_type_errors(tmp_path):
    with pytest.raises(TypeError, match="metadata must be a mapping, got list"):
        fastload.save(tmp_path / "m.safetensors", {"a": np.ones(2)}, metadata=[("a", "b")])
    assert not (tmp_path / "m.safetensors").exists()
    for call in (lambda: fastload.unflatten({"a": 1}, sep=1), lambda: fastload.flatten({}, 1)):
        with pytest.raises(TypeError, match="sep must be a string, got int"):
            call()
    with pytest.raises(ValueError, match="sep must be a non-empty string"):
        fastload.unflatten({"a": 1}, sep="")


def test_numpy_flags_and_counts_are_taken_where_python_ones_are():
    seen = []
    dst = {"a": np.zeros(2)}
    fastload.loadmodel(dst, {"a": np.ones(2)}, progress=np.False_, threads=np.int64(2))
    fastload.loadmodel(dst, {"a": np.full(2, 2.0)}, progress=lambda d, t: seen.append((d, t)))
    assert dst["a"].tolist() == [2.0, 2.0] and seen[-1] == (16, 16)
