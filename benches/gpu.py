"""CUDA loads: GPT-2 (124M, float32) into and out of a GPU, fastload against
``load_state_dict``, in GB/s. Needs torch with a CUDA device:

    python benches/gpu.py             # prints a table, writes benches/gpu.json

Directions: host -> device (pageable and pinned sources), device -> host, device -> device.
Every time is a median over repeats, each ended by ``torch.cuda.synchronize()``.
"""

from __future__ import annotations

import json
import sys
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
    dst_host = torch_scenarios.gpt2(seed=3, scale=1)
    cases = {
        "host -> device (pageable)": (on_device, flat),
        "host -> device (pinned)": (on_device, pinned),
        "device -> host": (dst_host, other_device.state_dict()),
        "device -> device": (on_device, other_device.state_dict()),
    }
    rows = []
    for name, (dst, src) in cases.items():
        fast = timed(lambda dst=dst, src=src: fastload.loadmodel(dst, src))
        ref = timed(lambda dst=dst, src=src: dst.load_state_dict(src))
        for (key, a), b in zip(dst.state_dict().items(), src.values()):
            assert torch.equal(a.cpu(), b.cpu()), key
        rows.append(
            {
                "case": name,
                "fastload_GBps": nbytes / fast / 1e9,
                "load_state_dict_GBps": nbytes / ref / 1e9,
                "speedup": ref / fast,
            }
        )
        print(
            f"{name:<28} fastload {nbytes / fast / 1e9:7.2f} GB/s   "
            f"load_state_dict {nbytes / ref / 1e9:7.2f} GB/s   {ref / fast:5.2f}x"
        )
    device = torch.cuda.get_device_name()
    out = Path(__file__).with_name("gpu.json")
    out.write_text(json.dumps({"device": device, "bytes": nbytes, "rows": rows}, indent=2))
    print(f"{device}; wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
