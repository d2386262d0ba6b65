"""Target-only greedy decoding with the tokens kept on the device.

The host loop of ``engine.generate`` reads every token back before it feeds it: one
synchronisation per token, and the GPU idles while the host stages the next step
(≈ 0.2 ms of a 4.4 ms 7B step on the H200, benchmarks/fast_engine.md).  A target
that offers ``greedy_chain`` (the fast path: :meth:`StepRunner.chain`) writes each argmax
straight into the next step's input, so the host only queues launches.  Here the answer is
queued in chunks of :data:`CHUNK` steps, one chunk ahead of the chunk being read, and the
host checks each chunk for EOS when its ids arrive:

    queue chunk 1 -> queue chunk 2, read chunk 1 (EOS?) -> queue chunk 3, read chunk 2 -> ...

So at most one chunk runs past an EOS (the one queued before the EOS chunk was read); its
steps are rolled back.  Each chunk's time is its own: CUDA events recorded around its launches
(the device time between them is the chunk's, however far ahead it was queued), or on a CPU,
where the steps run as they are called, the wall time of the call.  The ids are those of the
host loop: the same graphs, the same float32 logits, the first maximum (``torch.argmax``) on
either side.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Callable

import torch

from evspec.decoding.protocols import Target
from evspec.decoding.stats import RequestStats, RoundStats
from evspec.models.state import TargetState

#: steps queued per chunk (EOS is noticed at most one chunk late: that many steps wasted)
CHUNK = 8


def chainable(target: Target, state: TargetState) -> bool:
    """Whether ``target`` can decode ``state`` with :func:`chained_greedy`: it has the
    optional ``can_chain(state)`` and ``greedy_chain(state, n, first)`` of the fast path
    (``CausalLMWrapper``) and ``can_chain`` says yes."""
    can = getattr(target, "can_chain", None)
    return callable(can) and bool(can(state))


class _Chunk:
    """One queued chunk: ``n`` ids on their way to the host and the chunk's own time."""

    def __init__(self, target: Target, state: TargetState, n: int, first: int | None) -> None:
        self.n = n
        # recorded before the launches: on the GPU it completes when the previous chunk has
        start = torch.cuda.Event(enable_timing=True) if torch.cuda.is_available() else None
        if start is not None:
            start.record()
        t0 = time.perf_counter()
        ids = target.greedy_chain(state, n, first)  # type: ignore[attr-defined]
        # the chunk's time where the steps run inside the call (a CPU)
        self.wall_ms = (time.perf_counter() - t0) * 1e3
        self.events: tuple[torch.cuda.Event, torch.cuda.Event] | None = None
        self.done: torch.cuda.Event | None = None
        self.host = ids
        if ids.device.type == "cuda" and start is not None:
            end = torch.cuda.Event(enable_timing=True)
            end.record()
            self.events = (start, end)
            self.host = torch.empty(ids.shape, dtype=ids.dtype, pin_memory=True)
            self.host.copy_(ids, non_blocking=True)
            self.done = torch.cuda.Event()
            self.done.record()

    def read(self) -> tuple[list[int], float]:
        """The chunk's ids (waits for them) and its ms per step."""
        if self.done is not None:
            self.done.synchronize()
        ms = self.wall_ms
        if self.events is not None:
            ms = self.events[0].elapsed_time(self.events[1])
        return self.host.tolist(), ms / self.n


def chained_greedy(
    target: Target,
    state: TargetState,
    first: int,
    *,
    max_new_tokens: int,
    eos: int,
    stats: RequestStats,
    on_token: Callable[[list[int]], None] | None = None,
    chunk: int = CHUNK,
) -> tuple[list[int], str]:
    """Greedy answer tokens after ``first`` (pending, not yet fed) until ``eos`` (kept),
    ``max_new_tokens`` in all, or the context is full.  Returns ``(tokens incl. first,
    stop reason)``; the target's KV then holds the prompt and every token but the last, as
    after the host loop.  ``stats.rounds`` gets one plain round per token (its ``score_ms``:
    the time of the chunk that computed it over its steps)."""
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    base = state.length
    total = min(max_new_tokens - 1, target.max_context - base)
    tokens, stop = [first], ""
    queued = 0
    inflight: deque[_Chunk] = deque()

    def queue() -> None:
        nonlocal queued
        n = min(chunk, total - queued)
        inflight.append(_Chunk(target, state, n, first if queued == 0 else None))
        queued += n

    if queued < total:
        queue()
    while inflight and not stop:
        if queued < total:  # one chunk ahead of the one read next
            queue()
        new, per_token = inflight.popleft().read()
        if eos in new:
            new = new[: new.index(eos) + 1]
            stop = "eos"
        tokens.extend(new)
        stats.rounds.extend(RoundStats(0, 0, 0.0, per_token) for _ in new)
        if on_token:
            on_token(new)
    if not stop:
        stop = "max_new_tokens" if len(tokens) >= max_new_tokens else "context"
    target.rollback(state, state.length - (base + len(tokens) - 1))
    return tokens, stop
