"""PyTorch scenarios: modules loaded by fastload and by ``load_state_dict``, side by side."""

from __future__ import annotations

from typing import Any

import scenarios
import torch
from torch import nn

import fastload
from fastload.demo import median_seconds


def module_of(layout: Any, make) -> nn.Module:
    """An ``nn.Module`` tree of a layout from ``scenarios``: dicts become modules, lists
    ``nn.ModuleList``s, shapes parameters."""
    if isinstance(layout, list):
        return nn.ModuleList([module_of(v, make) for v in layout])
    module = nn.Module()
    for name, value in layout.items():
        if isinstance(value, tuple):
            module.register_parameter(name, nn.Parameter(make(value)))
        else:
            module.add_module(name, module_of(value, make))
    return module


def gpt2(seed: int, scale: int) -> nn.Module:
    """GPT-2 124M (``scale`` 1) as an ``nn.Module``, ``lm_head.weight`` tied to ``wte``."""
    d, vocab, ctx = 768 // scale, 50257 // scale, 1024 // scale
    layout = scenarios.gpt2_layout(n_layer=12, d=d, vocab=vocab, ctx=ctx)
    generator = torch.Generator().manual_seed(seed)
    model = module_of(layout, lambda shape: torch.randn(shape, generator=generator))
    model.lm_head = nn.Module()
    model.lm_head.weight = model.wte
    return model


def small_modules(count: int, seed: int) -> nn.ModuleList:
    torch.manual_seed(seed)
    return nn.ModuleList([nn.Linear(4, 4) for _ in range(count)])


def run_gpt2(run, quick: bool) -> None:
    """Records GPT-2 as an ``nn.Module`` on ``run`` (a ``run.Runner``)."""
    scale = 2 if quick else 1
    dst, src = gpt2(0, scale), gpt2(1, scale)
    flat = src.state_dict()
    nbytes = sum(p.numel() * p.element_size() for p in dst.parameters())
    fast = run.time(lambda: fastload.loadmodel(dst, flat))
    reference = run.time(lambda: dst.load_state_dict(flat))
    assert all(torch.equal(a, b) for a, b in zip(dst.parameters(), src.parameters()))
    run.record(
        "torch gpt2",
        fast,
        written=nbytes,
        leaves=len(flat),
        others={"load_state_dict": reference},
    )


def run_modules(run, quick: bool) -> None:
    """Records 20,000 small modules in an ``nn.ModuleList`` on ``run``."""
    count = 2_000 if quick else 20_000
    dst, src = small_modules(count, 0), small_modules(count, 1)
    flat = src.state_dict()
    nbytes = sum(p.numel() * p.element_size() for p in dst.parameters())
    fast = run.time(lambda: fastload.loadmodel(dst, flat))
    # load_state_dict grows quadratically with the number of modules: time it once.
    reference = median_seconds(lambda: dst.load_state_dict(flat), 1, warmup=0)
    run.record(
        f"torch {count // 1000}k modules",
        fast,
        written=nbytes,
        leaves=len(flat),
        others={"load_state_dict": reference},
    )
