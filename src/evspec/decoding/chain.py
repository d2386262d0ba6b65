"""Target-only greedy decoding with the tokens kept on the device.

The host loop of ``engine.generate`` reads every token back before it feeds it: one
synchronisation per token, and the GPU idles while the host stages the next step
(≈ 0.2 ms of a 4.4 ms 7B step on the H200, benchmarks/fast_engine.md round 5).  A target
that offers ``greedy_chain`` (the fast path: :meth:`StepRunner.chain`) writes each argmax
straight into the next step's input, so the host only queues launches.  Here the answer is
queued in chunks of :data:`CHUNK` steps, one chunk ahead of the chunk being read, and the
host checks each chunk for EOS when its ids arrive:

    queue chunk 1, chunk 2 -> read chunk 1 (EOS?) -> queue chunk 3 -> read chunk 2 -> ...

Steps queued past an EOS are wasted work (at most two chunks) and are rolled back.  The
ids are those of the host loop: the same graphs, the same float32 logits, the first
maximum (``torch.argmax``) on either side.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Callable

import torch

from evspec.decoding.protocols import Target
from evspec.decoding.stats import RequestStats, RoundStats
from evspec.models.state import TargetState

#: steps queued per chunk (EOS is noticed at most two chunks late: that many steps wasted)
CHUNK = 8


def chainable(target: Target, state: TargetState) -> bool:
    """Whether ``target`` can decode ``state`` with :func:`chained_greedy`: it has the
    optional ``can_chain(state)`` and ``greedy_chain(state, n, first)`` of the fast path
    (``CausalLMWrapper``) and ``can_chain`` says yes."""
    can = getattr(target, "can_chain", None)
    return callable(can) and bool(can(state))


def _to_host(ids: torch.Tensor) -> tuple[torch.Tensor, torch.cuda.Event | None]:
    """Start copying ``ids`` to the host: ``(host tensor, event to wait for or None)``."""
    if ids.device.type != "cuda":
        return ids, None
    host = torch.empty(ids.shape, dtype=ids.dtype, pin_memory=True)
    host.copy_(ids, non_blocking=True)
    done = torch.cuda.Event()
    done.record()
    return host, done


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
    the chunk's wall time over its tokens)."""
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    base = state.length
    total = min(max_new_tokens - 1, target.max_context - base)
    tokens, stop = [first], ""
    queued = 0
    inflight: deque[tuple[int, torch.Tensor, torch.cuda.Event | None]] = deque()

    def queue() -> None:
        nonlocal queued
        n = min(chunk, total - queued)
        ids = target.greedy_chain(state, n, first if queued == 0 else None)  # type: ignore[attr-defined]
        inflight.append((n, *_to_host(ids)))
        queued += n

    t_prev = time.perf_counter()
    for _ in range(2):
        if queued < total:
            queue()
    while inflight and not stop:
        if queued < total:
            queue()
        n, host, done = inflight.popleft()
        if done is not None:
            done.synchronize()
        new = host.tolist()
        now = time.perf_counter()
        per_token = (now - t_prev) * 1e3 / n
        t_prev = now
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
