"""The README's example does what the README says."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import fastload

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_example_runs_and_fails_as_shown():
    block = re.search(r"```python\n(.*?)```", README.read_text(), re.S).group(1)
    lines = block.splitlines()
    failing = max(i for i, line in enumerate(lines) if line.startswith("fastload.loadmodel"))
    namespace: dict = {}
    exec("\n".join(lines[:failing]), namespace)
    shown = [line[2:] for line in lines[failing + 1 :] if line.startswith("# ")]
    with pytest.raises(fastload.DimensionMismatch) as info:
        exec(lines[failing], namespace)
    assert f"{type(info.value).__module__}.{type(info.value).__name__}: {info.value}" == "\n".join(
        shown
    )
