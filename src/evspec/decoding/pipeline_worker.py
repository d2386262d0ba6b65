"""The pipelined schedule's drafter side (``decoding.pipeline``): the worker thread and
its CUDA stream (:class:`_DraftWorker`), the drafter as seen from that thread with its
pre-draft / re-sync / rewind steps (:class:`_Lane`), and the checks that decide whether a
drafter can be pre-drafted (:func:`pipeline_support`) and on which device it computes
(:func:`drafter_device`).  See ``decoding.pipeline``'s docstring for the schedule and why
it is lossless.
"""

from __future__ import annotations

import time
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any, Callable

import torch

from evspec.decoding.drafters.cascade import can_rewind, rewind
from evspec.decoding.drafters.controlled import ControlledDrafter
from evspec.decoding.drafters.model import ModelDrafter
from evspec.decoding.protocols import Drafter, Target
from evspec.models.request import Request
from evspec.models.state import TargetState


def drafter_device(drafter: Drafter) -> torch.device | None:
    """The device a drafter computes on (None: host-only, e.g. prompt lookup)."""
    parts = ("model", "middle", "lm_head")
    for obj in (drafter, *(getattr(drafter, name, None) for name in parts)):
        dev = getattr(obj, "device", None)
        if dev is None and obj is not None and hasattr(obj, "weight"):
            dev = obj.weight.device
        if dev is not None:
            return torch.device(dev)
    inner = getattr(drafter, "inner", None)
    return drafter_device(inner) if inner is not None else None


def pipeline_support(drafter: Drafter) -> str:
    """Why ``drafter`` cannot be pre-drafted ("" when it can)."""
    if getattr(drafter, "needs_target_hidden", False):
        return "needs the target's hidden states of tokens not yet scored"
    if not can_rewind(drafter):
        return f"{type(drafter).__name__} cannot rewind committed tokens"
    return ""


def _early_begin(drafter: Drafter, first_known: bool) -> bool:
    """Whether ``begin`` may run before the target's first token exists: only for plain
    ``ModelDrafter``s, whose ``begin`` prefills and queues the token without reading the
    target state (a placeholder token is swapped for the real one by rewind + accept)."""
    if isinstance(drafter, ControlledDrafter):  # checks the first token against its reference
        return first_known and type(drafter.inner) is ModelDrafter
    return type(drafter) is ModelDrafter


@dataclass
class _Block:
    """Drafts for one round: ``tokens`` ``[k]`` host ids, ``probs`` ``[k, V]`` on the target's
    device (None = deterministic drafter); ``guess``: a pre-draft's guess of the target's
    next token (None for a fresh block)."""

    tokens: list[int]
    probs: torch.Tensor | None = None
    guess: int | None = None


class _DraftWorker:
    """Runs every drafter call, in submission order, on one thread and (on CUDA) its own
    stream; each call ends with that stream synchronised, so its results are ready."""

    def __init__(self, device: torch.device | None) -> None:
        self.device = device
        self.stream = torch.cuda.Stream(device) if device is not None and device.type == "cuda" else None
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="evspec-draft")
        self._queued: list[Future] = []
        self.busy_ms = 0.0

    def _run(self, fn: Callable[..., Any], args: tuple) -> tuple[Any, float]:
        with ExitStack() as stack:
            if self.stream is not None:
                stack.enter_context(torch.cuda.device(self.device))
                stack.enter_context(torch.cuda.stream(self.stream))
            t0 = time.perf_counter()
            out = fn(*args)
            if self.stream is not None:
                self.stream.synchronize()
            return out, (time.perf_counter() - t0) * 1e3

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future:
        fut = self._pool.submit(self._run, fn, args)
        self._queued.append(fut)
        return fut

    def wait(self, fut: Future | None = None) -> tuple[Any, float]:
        """Wait for ``fut`` (default: everything queued), re-raising the first failure of
        any call queued before it; returns ``fut``'s (result, ms)."""
        upto = len(self._queued) if fut is None else self._queued.index(fut) + 1
        done, self._queued = self._queued[:upto], self._queued[upto:]
        out: tuple[Any, float] = (None, 0.0)
        for f in done:
            out = f.result()
            self.busy_ms += out[1]
        return out

    def finish(self, last: Callable[[], None], *, quiet: bool) -> None:
        """Run ``last`` (the drafter's ``end``) after everything queued, then stop the
        thread.  ``quiet``: an error is already propagating; do not mask it."""
        try:
            self.submit(last)
            if quiet:
                for f in self._queued:
                    f.exception()  # waits; the error that matters is the one propagating
                self._queued = []
            else:
                self.wait()
        finally:
            self._pool.shutdown(wait=True, cancel_futures=True)


class _Lane:
    """The drafter seen from the worker thread.  Invariant between rounds: the drafter's
    committed tokens plus the first ``head`` tokens of its outstanding proposal are the
    confirmed answer (pending token included); the rest of the proposal is the block the
    target verifies next."""

    def __init__(self, drafter: Drafter, target_device: torch.device, gen: torch.Generator | None,
                 temperature: float) -> None:
        self.drafter, self.target_device = drafter, target_device
        self.gen, self.temperature = gen, temperature
        self.proposal: list[int] = []  # the outstanding proposal (host ids)
        self.head = 0  # its confirmed leading tokens (1 after a used pre-draft: the guess)

    def _propose(self, k: int) -> tuple[list[int], torch.Tensor | None]:
        draft = self.drafter.propose(k, self.temperature, self.gen)
        tokens = [int(t) for t in draft.tokens.reshape(-1).tolist()]
        probs = None
        if draft.probs is not None and tokens:
            probs = draft.probs[: len(tokens)].to(self.target_device, non_blocking=True)  # [k, V]
        self.proposal = tokens
        return tokens, probs

    def begin(self, request: Request, target: Target, state: TargetState, first: int) -> None:
        self.drafter.begin(request, target, state, first)

    def replace_first(self, first: int) -> None:
        """Swap the placeholder queued by an early ``begin`` for the target's first token."""
        rewind(self.drafter, 1)
        self.drafter.accept(0, first)

    def draft(self, k: int) -> _Block:
        """A fresh block of up to ``k`` drafts (k = 0: nothing is proposed)."""
        self.head = 0
        if k < 1:
            self.proposal = []
            return _Block([])
        tokens, probs = self._propose(k)
        return _Block(tokens, probs)

    def settle(self, n: int, token: int, hidden: torch.Tensor | None, ready: Any) -> None:
        """The sequential re-sync: keep ``n`` drafts of the block, append ``token``."""
        if hidden is None:
            self.drafter.accept(self.head + n, token)
        else:  # [n + 1, H] from the target's stream: order the copy after it
            if ready is not None:
                torch.cuda.current_stream(hidden.device).wait_event(ready)
            dev = drafter_device(self.drafter) or hidden.device
            moved = hidden.to(dev, non_blocking=dev.type == "cuda")  # to the host: wait for it
            if moved.device.type == "cuda" and moved.data_ptr() == hidden.data_ptr():
                moved.record_stream(torch.cuda.current_stream(moved.device))
            self.drafter.accept(self.head + n, token, target_hidden=moved)
        self.proposal, self.head = [], 0

    def predraft(self, k_next: int) -> _Block:
        """Assume the whole block is accepted: commit it, then propose ``1 + k_next``."""
        if self.proposal:
            self.drafter.accept(len(self.proposal) - 1, self.proposal[-1])
        tokens, probs = self._propose(1 + k_next)
        if not tokens:
            return _Block([], None, None)
        return _Block(tokens[1:], None if probs is None else probs[1:], tokens[0])

    def resolve(self, hit: bool, n: int, k: int, token: int) -> None:
        """After a pre-draft: keep it (``hit``), or drop it and the rejected drafts."""
        if hit:
            self.head = 1
            return
        self.drafter.accept(0, token)  # discards the pre-draft; committed: block + token
        if n < k:
            rewind(self.drafter, k - n + 1)
            self.drafter.accept(0, token)
        self.proposal, self.head = [], 0


def _stream_sync(device: torch.device) -> None:
    """Wait for this thread's current stream on ``device`` (not the whole device, whose
    other stream may be the drafter's)."""
    if device.type == "cuda":
        torch.cuda.current_stream(device).synchronize()

