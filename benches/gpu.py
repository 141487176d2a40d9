"""CUDA loads: GPT-2 (124M, float32) into and out of a GPU, fastload against
``load_state_dict``, in GB/s. Needs torch with a CUDA device:

    python benches/gpu.py             # prints a table, writes benches/gpu.json

Directions: host -> device (pageable and pinned sources, a float32 source into a bfloat16
model, and a safetensors file against ``safetensors.torch.load_model``), device -> host,
device -> device. Every time is a median
over repeats, each ended by ``torch.cuda.synchronize()``; the first load of the process,
which pins the staging buffers, is reported apart.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch_scenarios  # noqa: E402

import fastload  # noqa: E402
from fastload.demo import median_seconds  # noqa: E402


def timed(fn, repeats: int = 7) -> float:
    def run():
        fn()
        torch.cuda.synchronize()

    return median_seconds(run, repeats)


def reference(dst: torch.nn.Module, src) -> None:
    """``load_state_dict``, or for a file ``safetensors.torch.load_model`` onto dst's GPU."""
    if isinstance(src, Path):
        from safetensors.torch import load_model

        load_model(dst, src, strict=False, device="cuda")
    else:
        dst.load_state_dict(src)


def main() -> int:
    if not torch.cuda.is_available():
        print("no CUDA device: nothing to measure")
        return 0
    host = torch_scenarios.gpt2(seed=1, scale=1)
    nbytes = sum(p.numel() * p.element_size() for p in host.parameters())
    flat = host.state_dict()
    pinned = {k: v.pin_memory() for k, v in flat.items()}
    on_device = torch_scenarios.gpt2(seed=0, scale=1).cuda()
    other_device = torch_scenarios.gpt2(seed=2, scale=1).cuda()
    on_device_bf16 = torch_scenarios.gpt2(seed=0, scale=1).to(device="cuda", dtype=torch.bfloat16)
    dst_host = torch_scenarios.gpt2(seed=3, scale=1)
    start = time.perf_counter()
    fastload.loadmodel(on_device, flat)
    torch.cuda.synchronize()
    first = time.perf_counter() - start
    print(f"first host -> device load of the process: {nbytes / first / 1e9:.2f} GB/s")
    folder = tempfile.TemporaryDirectory()
    path = Path(folder.name) / "gpt2.safetensors"
    fastload.save(path, host)
    cases = {
        "host -> device (pageable)": (on_device, flat, None),
        "host -> device (pinned)": (on_device, pinned, None),
        "file -> device": (on_device, path, flat),
        "host -> device, f32 -> bf16": (on_device_bf16, flat, None),
        "device -> host": (dst_host, other_device.state_dict(), None),
        "device -> device": (on_device, other_device.state_dict(), None),
    }
    rows = []
    for name, (dst, src, values) in cases.items():
        fast = timed(lambda dst=dst, src=src: fastload.loadmodel(dst, src))
        ref = timed(lambda dst=dst, src=src: reference(dst, src))
        for (key, a), b in zip(dst.state_dict().items(), (values or src).values()):
            assert torch.equal(a.cpu(), b.cpu().to(a.dtype)), key
        rows.append(
            {
                "case": name,
                "fastload_GBps": nbytes / fast / 1e9,
                "reference_GBps": nbytes / ref / 1e9,
                "speedup": ref / fast,
            }
        )
        print(
            f"{name:<28} fastload {nbytes / fast / 1e9:7.2f} GB/s   "
            f"reference {nbytes / ref / 1e9:7.2f} GB/s   {ref / fast:5.2f}x"
        )
    device = torch.cuda.get_device_name()
    out = Path(__file__).with_name("gpu.json")
    result = {"device": device, "bytes": nbytes, "first_load_GBps": nbytes / first / 1e9}
    out.write_text(json.dumps(dict(result, rows=rows), indent=2))
    print(f"{device}; wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
