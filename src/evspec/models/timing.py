"""Wall-clock timing that respects CUDA's asynchrony: :func:`sync` waits for a device's
queued work, :func:`timed` adds a block's milliseconds to a timings dict.  Shared by the
model wrappers (``models.causal_lm``) and the decoding loops.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Iterator

import torch


def sync(device: torch.device) -> None:
    """Wait for queued work on a CUDA ``device`` (no-op elsewhere) before reading a clock."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextmanager
def timed(device: torch.device, out: dict[str, float], key: str) -> Iterator[None]:
    """Wall-clock milliseconds of the block into ``out[key]``, synchronising CUDA."""
    sync(device)
    t0 = time.perf_counter()
    yield
    sync(device)
    out[key] = out.get(key, 0.0) + (time.perf_counter() - t0) * 1e3
