"""Copies between host memory and a GPU through pinned staging buffers.

A copy from pageable host memory is staged by the CUDA driver through a small bounce
buffer, one tensor at a time, at a fraction of the bus's speed. Here large transfers go
through two pinned buffers instead: while the GPU reads one buffer, fastload's parallel
copy fills the other (host to device), or empties it (device to host). Tensors larger
than a buffer are split; the bytes of one buffer are one group.

Staging reorders copies, so it is used only where no copy's destination shares memory
with another copy's source or destination: the result is then that of copying leaf by
leaf in walk order.

A buffer holds the GPU side's dtype. Where the host side's dtype differs, the CPU casts
between the host memory and the buffer with torch's own conversion: torch casts a
blocking copy on the CPU too, so staging never changes a result (a cast on the GPU
would give other NaN bits and out-of-range integers).
"""

from __future__ import annotations

from typing import List, NamedTuple, Optional, Sequence, Tuple

import numpy as np
import torch

from . import _fastload

# Loads smaller than this are copied tensor by tensor: pinning buffers would cost more.
MIN_STAGED_BYTES = 16 << 20
CHUNK_MIN, CHUNK_MAX = 4 << 20, 64 << 20
# Offsets in a buffer are aligned for every dtype's view, and for the copy engines.
ALIGN = 256


class Piece(NamedTuple):
    """``host`` and ``device`` hold the same elements; ``offset`` is where they are
    staged, in bytes, in ``device``'s dtype."""

    host: np.ndarray
    device: torch.Tensor
    offset: int


def staged_bytes(host: np.ndarray, device: torch.Tensor) -> int:
    """The bytes a part takes in a buffer: its elements in the GPU side's dtype."""
    return host.size * device.element_size()


def chunk_size(total: int) -> int:
    """The size of each of the two buffers for ``total`` staged bytes: about an eighth of
    the load, so that filling and transfer overlap, between 4 and 64 MiB."""
    size = CHUNK_MIN
    while size < CHUNK_MAX and size * 8 < total:
        size *= 2
    return size


def pieces(host: np.ndarray, device: torch.Tensor, chunk: int) -> Optional[List[tuple]]:
    """``(host, device)`` parts of one copy, each staged in at most ``chunk`` bytes, or
    ``None`` where a large copy cannot be split (one of its sides is not contiguous)."""
    if staged_bytes(host, device) <= chunk:
        return [(host, device)]
    if not (host.flags.c_contiguous and device.is_contiguous()):
        return None
    flat_host, flat_device = host.reshape(-1), device.view(-1)
    step = chunk // device.element_size()
    return [(flat_host[i : i + step], flat_device[i : i + step]) for i in range(0, host.size, step)]


def groups(parts: Sequence[tuple], chunk: int) -> List[List[Piece]]:
    """Packs ``(host, device)`` parts into groups that each fit one buffer."""
    out: List[List[Piece]] = []
    group: List[Piece] = []
    used = 0
    for host, device in parts:
        size = staged_bytes(host, device)
        if used + size > chunk and group:
            out.append(group)
            group, used = [], 0
        group.append(Piece(host, device, used))
        used += -(-size // ALIGN) * ALIGN
    if group:
        out.append(group)
    return out


class Buffers:
    """Two pinned buffers, each with the event that says the GPU is done with it."""

    def __init__(self, chunk: int) -> None:
        # The caching host allocator keeps freed pinned memory: a later load reuses it.
        self.tensors = [torch.empty(chunk, dtype=torch.uint8, pin_memory=True) for _ in "ab"]
        self.arrays = [t.numpy() for t in self.tensors]
        self.events: List[List[torch.cuda.Event]] = [[], []]

    def views(self, slot: int, piece: Piece) -> Tuple[Optional[np.ndarray], torch.Tensor]:
        """The staging memory of ``piece`` in buffer ``slot``: as a tensor of the GPU
        side's dtype, and as an array where the host side has that dtype too."""
        host, device, start = piece.host, piece.device, piece.offset
        end = start + staged_bytes(host, device)
        tensor = self.tensors[slot][start:end].view(device.dtype).view(host.shape)
        if _torch_dtype(host.dtype) != device.dtype:
            return None, tensor
        return self.arrays[slot][start:end].view(host.dtype).reshape(host.shape), tensor

    def mark(self, slot: int, group: List[Piece]) -> None:
        """Records, on each GPU of ``group``, that its copies so far have been issued."""
        self.events[slot] = []
        for device in {piece.device.device for piece in group}:
            event = torch.cuda.Event()
            event.record(torch.cuda.current_stream(device))
            self.events[slot].append(event)

    def wait(self, slot: int) -> None:
        """Waits until the GPUs are done with buffer ``slot``."""
        for event in self.events[slot]:
            event.synchronize()


def _torch_dtype(dtype: np.dtype) -> Optional[torch.dtype]:
    from ._torch import _TORCH

    return _TORCH.get(dtype)


def _exchange(group: List[Piece], staged: list, into_buffer: bool, threads: int) -> None:
    """Copies a group between host memory and its staging memory: parts of one dtype as
    raw bytes on fastload's threads, the others cast by torch on the CPU."""
    from ._torch import as_tensor

    hosts, buffers = [], []
    for piece, (array, tensor) in zip(group, staged):
        if array is not None:
            hosts.append(piece.host)
            buffers.append(array)
        elif into_buffer:
            tensor.copy_(as_tensor(piece.host))
        else:
            as_tensor(piece.host).copy_(tensor)
    if hosts:
        dsts, srcs = (buffers, hosts) if into_buffer else (hosts, buffers)
        # Not reserved again: the memory is the outer load's, which holds its reservation.
        _fastload.loadmodel(dsts, srcs, None, True, "no", threads, None, False)


def host_to_device(batches: List[List[Piece]], chunk: int, threads: int) -> None:
    """Copies every group's host parts into the GPU: fill a buffer on the CPU's threads,
    then let the GPU read it while the other buffer fills."""
    buffers = Buffers(chunk)
    for number, group in enumerate(batches):
        slot = number % 2
        buffers.wait(slot)
        staged = [buffers.views(slot, piece) for piece in group]
        _exchange(group, staged, True, threads)
        for piece, (_, tensor) in zip(group, staged):
            piece.device.copy_(tensor, non_blocking=True)
        buffers.mark(slot, group)


def device_to_host(batches: List[List[Piece]], chunk: int, threads: int) -> None:
    """Copies every group's device parts into host memory: the GPU writes one buffer
    while the CPU's threads empty the other."""
    buffers = Buffers(chunk)

    def send(number: int) -> list:
        slot = number % 2
        staged = [buffers.views(slot, piece) for piece in batches[number]]
        for piece, (_, tensor) in zip(batches[number], staged):
            tensor.copy_(piece.device, non_blocking=True)
        buffers.mark(slot, batches[number])
        return staged

    staged = send(0)
    for number, group in enumerate(batches):
        following = send(number + 1) if number + 1 < len(batches) else None
        buffers.wait(number % 2)
        _exchange(group, staged, False, threads)
        staged = following


def disjoint(copies: Sequence[Tuple[torch.Tensor, torch.Tensor]]) -> bool:
    """Whether no destination shares memory with another destination or any source."""
    spans = []
    for dst, src in copies:
        for tensor, written in ((dst, True), (src, False)):
            span = span_of(tensor)
            if span is not None:
                spans.append(span + (written,))
    spans.sort()
    place = None
    write_end = read_end = 0
    for device, start, end, written in spans:
        if device != place:
            place, write_end, read_end = device, 0, 0
        if start < write_end or (written and start < read_end):
            return False
        if written:
            write_end = max(write_end, end)
        else:
            read_end = max(read_end, end)
    return True


def span_of(tensor: torch.Tensor) -> Optional[Tuple[Tuple[str, int], int, int]]:
    """``(device, start, end)`` of the bytes a tensor reaches, or ``None`` if empty."""
    if tensor.numel() == 0:
        return None
    reach = sum((size - 1) * stride for size, stride in zip(tensor.shape, tensor.stride()))
    start = tensor.data_ptr()
    device = tensor.device
    return (
        (device.type, -1 if device.index is None else device.index),
        start,
        start + (reach + 1) * tensor.element_size(),
    )


def run(copies: Sequence[Tuple[torch.Tensor, torch.Tensor]], threads: int) -> List[tuple]:
    """Copies through pinned buffers what pays to stage; returns the ``(dst, src)`` copies
    left for torch, in their order (all of them where staging does not pay, or where
    the copies are not :func:`disjoint`)."""
    from ._torch import as_numpy

    if _crossing_bytes(copies) < MIN_STAGED_BYTES or not disjoint(copies):
        return list(copies)
    upload: List[tuple] = []  # (host source, device destination, copy)
    download: List[tuple] = []  # (host destination, device source, copy)
    for copy in copies:
        dst, src = copy
        if dst.is_cuda and src.device.type == "cpu" and not src.is_pinned():
            host = as_numpy(src)
            if host is not None:
                upload.append((host, dst, copy))
        elif src.is_cuda and dst.device.type == "cpu":
            host = as_numpy(dst)
            if host is not None:
                download.append((host, src, copy))
    staged = set()
    for batch, move in ((upload, host_to_device), (download, device_to_host)):
        total = sum(staged_bytes(host, device) for host, device, _ in batch)
        if total < MIN_STAGED_BYTES:
            continue
        chunk = chunk_size(total)
        parts: List[tuple] = []
        for host, device, copy in batch:
            found = pieces(host, device, chunk)
            if found is not None:
                parts.extend(found)
                staged.add(id(copy))
        move(groups(parts, chunk), chunk, threads)
    return [copy for copy in copies if id(copy) not in staged]


def _crossing_bytes(copies: Sequence[Tuple[torch.Tensor, torch.Tensor]]) -> int:
    """Bytes that cross between host and GPU: an upper bound of what could be staged."""
    crossing = (dst for dst, src in copies if dst.is_cuda != src.is_cuda)
    return sum(dst.numel() * dst.element_size() for dst in crossing)
