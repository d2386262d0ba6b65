"""Fixed-size step functions over a static cache, replayed as CUDA graphs.

A decode step (1 token) and a score step (pending + γ drafts) differ only in the number
of tokens ``T``.  :class:`StepRunner` rounds ``T`` up to a *bucket* size and the attended
cache rows up to a multiple of ``kv_granularity``, so a handful of static shapes serve
every call::

    tokens [T] -> copied into tokens_buf[:T]; tokens_buf[T:bucket] keep old (valid) ids
    start      -> pos_buf (a device scalar: one graph serves every position)
    step(bucket, kv_rows): FastLlama over tokens_buf[:bucket] at pos_buf,
                           attending rows [0, kv_rows) -> logits [bucket, V], hidden
    outputs [:T] are returned (cloned); the padded rows are ignored.

Padded positions write keys/values at ``start + T .. start + bucket - 1``: beyond the
valid length, so the length pointer hides them and later writes overwrite them; the
cache's slack (>= the largest bucket) keeps them inside the buffer.  Real queries never
see padded keys (the causal mask: a key is visible only to queries at or after it).

On CUDA with ``cuda_graphs`` each ``(bucket, kv_rows)`` is captured the first time it is
used: two warm-up runs on a side stream (they write exactly the keys/values the replay
writes, so capturing mid-request is harmless), then capture into a pool shared by this
runner's graphs, then replay.  With ``compile`` the step is ``torch.compile``-d first.
Without graphs (CPU, or ``cuda_graphs=False``) the very same padded step runs eagerly.
Capture and compile milliseconds are accumulated in :attr:`StepRunner.stats`.
"""

from __future__ import annotations

import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Callable

import torch

from evspec.models.fast.llama import FastLlama
from evspec.models.fast.static_cache import StaticKVCache

StepFn = Callable[[int, int], tuple[torch.Tensor, torch.Tensor]]


@dataclass
class StepStats:
    """``capture_ms``: warm-up + capture time of all graphs (compile time included when
    compiling; ``compile_ms`` is the part spent in the first compiled call of each shape)."""

    graphs: int = 0
    capture_ms: float = 0.0
    compile_ms: float = 0.0
    replays: int = 0
    eager_steps: int = 0
    shapes: list[tuple[int, int]] = field(default_factory=list)


def bucket_for(size: int, buckets: tuple[int, ...]) -> int:
    """The smallest bucket >= ``size`` (``buckets`` sorted ascending)."""
    for b in buckets:
        if b >= size:
            return b
    raise ValueError(
        f"a step of {size} tokens exceeds the largest bucket {buckets[-1]}; raise "
        "enable_fast(max_score_tokens=...)"
    )


def kv_rows_for(end: int, granularity: int, capacity: int) -> int:
    """Cache rows a step ending (exclusive) at ``end`` attends over: ``end`` rounded up to
    a multiple of ``granularity``, capped at the capacity."""
    return min(capacity, -(-end // granularity) * granularity)


def _compile_limits() -> ExitStack:
    """Raise dynamo's per-function recompile limit for the duration of a compile: every
    (bucket, kv_rows) pair is a separate static shape."""
    stack = ExitStack()
    config = getattr(getattr(torch, "_dynamo", None), "config", None)
    if config is not None:
        for name in ("recompile_limit", "cache_size_limit"):
            if hasattr(config, name):
                stack.enter_context(config.patch(**{name: 1024}))
                break
    return stack


class StepRunner:
    """Bucketed, optionally graph-captured steps of one :class:`FastLlama` on one cache.

    ``buckets``: allowed token counts, ascending (the largest bounds one step);
    ``kv_granularity``: attended rows are rounded up to a multiple of this;
    ``cuda_graphs``: capture/replay (CUDA only); ``compile``: ``torch.compile`` the step
    (``compile_mode`` passed through) before capture.
    """

    def __init__(
        self,
        model: FastLlama,
        cache: StaticKVCache,
        *,
        buckets: tuple[int, ...],
        kv_granularity: int,
        cuda_graphs: bool,
        compile: bool = False,
        compile_mode: str | None = None,
    ) -> None:
        if not buckets or list(buckets) != sorted(set(buckets)) or buckets[0] < 1:
            raise ValueError(f"buckets must be distinct positive sizes in ascending order, got {buckets}")
        if cache.capacity - cache.max_len < buckets[-1]:
            raise ValueError(
                f"cache slack {cache.capacity - cache.max_len} is smaller than the largest "
                f"bucket {buckets[-1]}: padded steps could write past the buffer"
            )
        if kv_granularity < 1:
            raise ValueError(f"kv_granularity must be >= 1, got {kv_granularity}")
        device = cache.k.device
        if cuda_graphs and device.type != "cuda":
            raise ValueError(f"cuda_graphs needs a CUDA cache; this one is on {device}")
        self.model, self.cache = model, cache
        self.buckets, self.kv_granularity = tuple(buckets), int(kv_granularity)
        self.cuda_graphs, self.compile = bool(cuda_graphs), bool(compile)
        self.stats = StepStats()
        self.tokens_buf = torch.zeros(buckets[-1], dtype=torch.long, device=device)  # [Bmax]
        self.pos_buf = torch.zeros(1, dtype=torch.long, device=device)  # start position
        self._host_tokens: torch.Tensor | None = None
        self._host_ready: torch.cuda.Event | None = None
        if device.type == "cuda":
            self._host_tokens = torch.zeros(buckets[-1], dtype=torch.long).pin_memory()
        self._step: StepFn = self._eager_step
        if self.compile:
            self._step = torch.compile(self._eager_step, mode=compile_mode, dynamic=False)
        self._graphs: dict[tuple[int, int], tuple[torch.cuda.CUDAGraph, torch.Tensor, torch.Tensor]] = {}
        self._compiled_shapes: set[tuple[int, int]] = set()
        self._pool = torch.cuda.graph_pool_handle() if self.cuda_graphs else None

    # -- the step --------------------------------------------------------------------------
    def _eager_step(self, bucket: int, kv_rows: int) -> tuple[torch.Tensor, torch.Tensor]:
        """One padded step over the static buffers: ``(logits [bucket, V] float32,
        hidden [bucket, H])``."""
        hidden = self.model.forward(
            self.cache, self.pos_buf, tokens=self.tokens_buf[:bucket], kv_len=kv_rows
        )
        return self.model.logits(hidden), hidden

    def _load_inputs(self, tokens: torch.Tensor, start: int) -> None:
        t = int(tokens.numel())
        if tokens.device == self.tokens_buf.device or self._host_tokens is None:
            self.tokens_buf[:t].copy_(tokens.reshape(-1))
        else:  # CPU ids -> pinned staging -> async copy (no host sync)
            if self._host_ready is not None:
                self._host_ready.synchronize()  # the previous copy has left the staging buffer
            self._host_tokens[:t].copy_(tokens.reshape(-1))
            self.tokens_buf[:t].copy_(self._host_tokens[:t], non_blocking=True)
            self._host_ready = torch.cuda.Event()
            self._host_ready.record()
        self.pos_buf.fill_(start)

    def _run_step(self, bucket: int, kv_rows: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self.compile and (bucket, kv_rows) not in self._compiled_shapes:
            t0 = time.perf_counter()
            with _compile_limits():
                out = self._step(bucket, kv_rows)
            if self.tokens_buf.device.type == "cuda":
                torch.cuda.synchronize(self.tokens_buf.device)
            self.stats.compile_ms += (time.perf_counter() - t0) * 1e3
            self._compiled_shapes.add((bucket, kv_rows))
            return out
        return self._step(bucket, kv_rows)

    def _capture(self, bucket: int, kv_rows: int) -> tuple[torch.cuda.CUDAGraph, torch.Tensor, torch.Tensor]:
        device = self.tokens_buf.device
        torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            for _ in range(2):  # warm-up (and compile); writes what the replay writes
                self._run_step(bucket, kv_rows)
        torch.cuda.current_stream(device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self._pool):
            logits, hidden = self._step(bucket, kv_rows)
        torch.cuda.synchronize(device)
        self.stats.capture_ms += (time.perf_counter() - t0) * 1e3
        self.stats.graphs += 1
        self.stats.shapes.append((bucket, kv_rows))
        return graph, logits, hidden

    # -- public ----------------------------------------------------------------------------
    def plan(self, count: int, start: int) -> tuple[int, int]:
        """``(bucket, kv_rows)`` of a step feeding ``count`` tokens at ``start``."""
        bucket = bucket_for(count, self.buckets)
        return bucket, kv_rows_for(start + bucket, self.kv_granularity, self.cache.capacity)

    def run(
        self, tokens: torch.Tensor, start: int, *, return_hidden: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Feed ``tokens`` ``[T]`` at positions ``start ..``; ``(logits [T, V] float32,
        hidden [T, H] or None)``, fresh tensors (not the graph's static outputs).  Writes
        the keys/values; moving the cache's length is the caller's job."""
        t = int(tokens.numel())
        if t < 1:
            raise ValueError("a step needs at least one token")
        self.cache.check_fits(start, t)
        bucket, kv_rows = self.plan(t, start)
        self._load_inputs(tokens, start)
        if self.cuda_graphs:
            entry = self._graphs.get((bucket, kv_rows))
            if entry is None:
                entry = self._graphs[(bucket, kv_rows)] = self._capture(bucket, kv_rows)
            graph, logits, hidden = entry
            graph.replay()
            self.stats.replays += 1
        else:
            logits, hidden = self._run_step(bucket, kv_rows)
            self.stats.eager_steps += 1
        return logits[:t].clone(), (hidden[:t].clone() if return_hidden else None)
