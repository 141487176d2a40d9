"""The public API: exports, docstring examples, and the type stub of the extension."""

from __future__ import annotations

import ast
import doctest
import inspect
from pathlib import Path

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
