"""Real torch models for the tests: an MLP, a CNN with BatchNorm, a GPT-2-style
transformer with a tied head, an LSTM; and snapshots of their state."""

from __future__ import annotations

import torch
from torch import nn


class Block(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(d)
        self.attn = nn.MultiheadAttention(d, 2, batch_first=True)
        self.ln_2 = nn.LayerNorm(d)
        self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))

    def forward(self, x):
        h = self.ln_1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.mlp(self.ln_2(x))


class TinyGPT(nn.Module):
    """A GPT-2-style transformer whose output head is tied to the token embedding."""

    def __init__(self, vocab: int = 50, d: int = 16, layers: int = 2) -> None:
        super().__init__()
        self.wte = nn.Embedding(vocab, d)
        self.wpe = nn.Embedding(8, d)
        self.h = nn.ModuleList([Block(d) for _ in range(layers)])
        self.ln_f = nn.LayerNorm(d)
        self.lm_head = nn.Linear(d, vocab, bias=False)
        self.lm_head.weight = self.wte.weight
        self.register_buffer("mask", torch.ones(8, 8), persistent=False)

    def forward(self, idx):
        x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1]))
        for block in self.h:
            x = block(x)
        return self.lm_head(self.ln_f(x))


def mlp():
    return nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))


def cnn():
    return nn.Sequential(
        nn.Conv2d(3, 4, 3),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Conv2d(4, 2, 3, bias=False),
        nn.BatchNorm2d(2),
        nn.Flatten(),
    )


def lstm():
    return nn.LSTM(5, 7, num_layers=2)


MODELS = {
    "mlp": mlp,
    "cnn": cnn,
    "gpt": TinyGPT,
    "lstm": lstm,
    # More of torch.nn's own layouts: fused and split projections, recurrent weights of
    # both directions, parametrizations, absent affine parameters, padding rows.
    "transformer": lambda: nn.Transformer(8, 2, 1, 1, 16, batch_first=True),
    "attention with kdim and vdim": lambda: nn.MultiheadAttention(8, 2, kdim=4, vdim=6),
    "bidirectional gru": lambda: nn.GRU(4, 6, num_layers=2, bidirectional=True),
    "lstm with projections": lambda: nn.LSTM(4, 6, proj_size=3),
    "grouped conv": lambda: nn.Sequential(nn.Conv2d(4, 8, 3, groups=2), nn.BatchNorm2d(8)),
    "norms without parameters": lambda: nn.Sequential(
        nn.LayerNorm(4, elementwise_affine=False),
        nn.BatchNorm1d(4, track_running_stats=False),
        nn.Linear(4, 4),
    ),
    "embedding with padding": lambda: nn.Embedding(10, 4, padding_idx=0),
    "weight norm": lambda: nn.utils.parametrizations.weight_norm(nn.Linear(5, 7)),
    "spectral norm": lambda: nn.utils.spectral_norm(nn.Linear(5, 7)),
    "prelu and bilinear": lambda: nn.Sequential(nn.PReLU(3), nn.Bilinear(3, 3, 2)),
}


def build(factory, seed: int):
    torch.manual_seed(seed)
    model = factory()
    # Buffers differ too: running statistics and batch counters.
    for buf in model.buffers():
        if buf.is_floating_point():
            buf.uniform_(0.5, 2.0)
        else:
            buf.fill_(seed + 3)
    return model


def snapshot(model: nn.Module) -> dict:
    """A copy of every entry of the module's state_dict."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_equal_snapshot(model: nn.Module, before: dict) -> None:
    """The module's state is bit for bit what ``snapshot`` saw."""
    after = snapshot(model)
    assert list(after) == list(before)
    for key in before:
        assert torch.equal(after[key], before[key]), key
