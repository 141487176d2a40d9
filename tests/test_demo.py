"""The README's first command runs the demo: it must load, refuse, save and time."""

from __future__ import annotations

import pytest

from fastload import demo


def test_demo_runs_on_a_small_model(capsys):
    assert demo.main(["--layers", "1", "--width", "16", "--vocab", "64", "--repeats", "1"]) == 0
    out = capsys.readouterr().out
    assert "loaded: every parameter equals the checkpoint's" in out
    assert "bad checkpoint refused with DimensionMismatch" in out
    assert "h.0.mlp.2.weight: Tried to load size (3, 3) array into size (64, 16)" in out
    assert "the model is bit-for-bit unchanged" in out
    assert "loaded back from it: every parameter equal" in out
    assert "fastload.loadmodel" in out and "Python walk + np.copyto" in out


@pytest.mark.parametrize("flag, value", [("--repeats", "0"), ("--layers", "-1"), ("--width", "x")])
def test_demo_refuses_sizes_that_are_not_positive_integers_with_a_usage_error(flag, value, capsys):
    with pytest.raises(SystemExit) as info:
        demo.main([flag, value])
    assert info.value.code == 2
    assert f"argument {flag}" in capsys.readouterr().err
