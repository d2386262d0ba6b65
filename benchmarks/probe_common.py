"""Helpers shared by the kernel probes (``attention_probe.py``, ``gemv_probe.py``,
``fast_profile.py``): replay a step as one CUDA graph, take the median of timed calls, and
write the JSON next to the other outputs."""

from __future__ import annotations

import json
import os
import statistics
import time
from pathlib import Path
from typing import Callable


def replayable(fn: Callable[[], object], cuda: bool) -> Callable[[], object]:
    """``fn`` captured as one CUDA graph (after two eager calls, which compile any Triton
    kernel first) and returned as its replay; ``fn`` itself off CUDA."""
    if not cuda:
        return fn
    import torch

    for _ in range(2):
        fn()
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    return graph.replay


def median_ms(run: Callable[[], object], repeats: int, cuda: bool, warmup: int = 3) -> float:
    """Median wall milliseconds of ``repeats`` device-synchronised calls after ``warmup``."""
    import torch

    sync = torch.cuda.synchronize if cuda else (lambda: None)
    for _ in range(warmup):
        run()
    sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        run()
        sync()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def write_json(out: dict, path: str | None, name: str) -> Path:
    """``out`` to ``path``, or to ``$OUT/name`` (the working directory without ``$OUT``)."""
    dest = Path(path) if path else Path(os.environ.get("OUT", ".")) / name
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(json.dumps(out, indent=1) + "\n")
    return dest
