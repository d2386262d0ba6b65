"""Fixed-size step functions over a static cache, replayed as CUDA graphs.

A decode step (1 token) and a score step (pending + γ drafts) differ only in the number
of tokens ``T``.  :class:`StepRunner` rounds ``T`` up to a *bucket* size and the attended
cache rows up to a multiple of ``kv_granularity``, so a handful of static shapes serve
every call::

    tokens [T] -> copied into tokens_buf[:T]; tokens_buf[T:bucket] keep old (valid) ids
    start      -> pos_buf (a 0-d device tensor: one graph serves every position)
    step(bucket, kv_rows): FastLlama over tokens_buf[:bucket] at pos_buf,
                           attending rows [0, kv_rows) -> logits [bucket, V], hidden
    outputs [:T] are returned (cloned); the padded rows are ignored.

The same holds for *embedding* inputs (:meth:`StepRunner.run_embeds`, the question
after a cached video prefix): ``embeds [T, H]`` go into ``embeds_buf[:T]``, padded to a
``prefill_buckets`` size, and the step returns hidden states only.

Padded positions write keys/values at ``start + T .. start + bucket - 1``: beyond the
valid length, so the length pointer hides them and later writes overwrite them; the
cache's slack (>= the largest bucket) keeps them inside the buffer.  Real queries never
see padded keys (the causal mask: a key is visible only to queries at or after it).

On CUDA with ``cuda_graphs`` each ``(kind, bucket, kv_rows)`` is captured the first time
it is used: two warm-up runs on a side stream (they write exactly the keys/values the
replay writes, so capturing mid-request is harmless), then capture into a pool shared by
this runner's graphs, then replay.  With ``compile`` the model's per-layer functions are
``torch.compile``-d (:meth:`FastLlama.compile`): they depend on the bucket only, not on
``kv_rows`` (attention stays outside them), so each bucket compiles once, during its
first warm-up, before any capture.  Without graphs (CPU, or ``cuda_graphs=False``) the
very same padded step runs eagerly.  Capture and compile milliseconds are accumulated in
:attr:`StepRunner.stats`.

Capturing at first use puts the capture inside whatever call first needs the shape (e.g.
a timed round that scores fewer drafts than usual near the end of an answer).
:meth:`StepRunner.prepare` captures (or compiles) up front every token step of given
sizes over a range of start positions (:meth:`StepRunner.step_shapes`), writing only
scratch rows at or after a given position.
"""

from __future__ import annotations

import time
from contextlib import ExitStack
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Literal

import torch

from evspec.models.fast.llama import FastLlama
from evspec.models.fast.static_cache import StaticKVCache

#: input kinds of a step: token ids (decode/score), embeddings (a prefill suffix), or one
#: greedy token whose argmax feeds the next step on the device (:meth:`StepRunner.chain`)
StepKind = Literal["tokens", "embeds", "greedy"]


def capture_graph(device: torch.device, pool, warm_up: Callable[[], object],
                  step: Callable[[], object]) -> tuple[torch.cuda.CUDAGraph, object]:
    """``warm_up()`` twice on a side stream (first-call allocations, compiles; it must write
    only what a replay writes), then ``step()`` captured into a CUDA graph allocating from
    ``pool``; synchronised.  Returns the graph and what ``step`` returned (the replay's
    output buffers).  Shared by :class:`StepRunner` and the draft heads' static runner."""
    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):
        for _ in range(2):
            warm_up()
    torch.cuda.current_stream(device).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, pool=pool):
        out = step()
    torch.cuda.synchronize(device)
    return graph, out


@dataclass
class StepStats:
    """``capture_ms``: warm-up + capture time of all graphs (compile time included when
    compiling; ``compile_ms`` is the part spent in the first compiled call of each bucket);
    ``shapes``: the ``(kind, bucket, kv_rows)`` captured."""

    graphs: int = 0
    capture_ms: float = 0.0
    compile_ms: float = 0.0
    replays: int = 0
    eager_steps: int = 0
    shapes: list[tuple[str, int, int]] = field(default_factory=list)
    compiled_buckets: list[int] = field(default_factory=list)


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
    bucket is a separate static shape, and models of other sizes (the drafter) add theirs
    to the same per-function cache; past the default limit dynamo would silently fall
    back to eager."""
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
    ``prefill_buckets``: allowed embedding counts for :meth:`run_embeds` (``()``: none);
    ``kv_granularity``: attended rows are rounded up to a multiple of this;
    ``cuda_graphs``: capture/replay (CUDA only); ``compile``: run the model's compiled
    per-layer functions (compiled here with ``compile_mode`` / ``compile_backend`` unless
    the model already is; needs a fused model).
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
        compile_backend: str = "inductor",
        prefill_buckets: tuple[int, ...] = (),
    ) -> None:
        for name, b in (("buckets", buckets), ("prefill_buckets", prefill_buckets)):
            if (b or name == "buckets") and (not b or list(b) != sorted(set(b)) or b[0] < 1):
                raise ValueError(f"{name} must be distinct positive sizes in ascending order, got {b}")
        largest = max((buckets[-1], *prefill_buckets))
        if cache.capacity - cache.max_len < largest:
            raise ValueError(
                f"cache slack {cache.capacity - cache.max_len} is smaller than the largest "
                f"bucket {largest}: padded steps could write past the buffer"
            )
        if kv_granularity < 1:
            raise ValueError(f"kv_granularity must be >= 1, got {kv_granularity}")
        device = cache.k.device
        if cuda_graphs and device.type != "cuda":
            raise ValueError(f"cuda_graphs needs a CUDA cache; this one is on {device}")
        if compile and not model.compiled:
            model.compile(mode=compile_mode, backend=compile_backend)  # ValueError if unfused
        self.model, self.cache = model, cache
        self.buckets, self.kv_granularity = tuple(buckets), int(kv_granularity)
        self.prefill_buckets = tuple(prefill_buckets)
        self.cuda_graphs, self.compile = bool(cuda_graphs), bool(compile)
        self.stats = StepStats()
        self.tokens_buf = torch.zeros(buckets[-1], dtype=torch.long, device=device)  # [Bmax]
        self.embeds_buf: torch.Tensor | None = None  # [Pmax, H], allocated at first use
        self.pos_buf = torch.zeros((), dtype=torch.long, device=device)  # start position (0-d)
        #: greedy chains write the token chosen for position p + 1 at index p + 1
        self.history = torch.zeros(cache.capacity + 1, dtype=torch.long, device=device)
        self._chain_end: int | None = None  # where the last chain stopped (its state is on the device)
        self._host_tokens: torch.Tensor | None = None
        self._host_ready: torch.cuda.Event | None = None
        if device.type == "cuda":
            self._host_tokens = torch.zeros(buckets[-1], dtype=torch.long).pin_memory()
        self._graphs: dict[tuple[str, int, int], tuple[torch.cuda.CUDAGraph, torch.Tensor | None, torch.Tensor]] = {}
        self._pool = torch.cuda.graph_pool_handle() if self.cuda_graphs else None

    # -- the step --------------------------------------------------------------------------
    def _eager_step(self, kind: StepKind, bucket: int, kv_rows: int) -> tuple[torch.Tensor | None, torch.Tensor]:
        """One padded step over the static buffers: ``(logits [bucket, V] float32 or None
        for embeddings, hidden [bucket, H])``.  A greedy step then writes its argmax as the
        next token (and into :attr:`history`) and moves the position on by one."""
        if kind == "embeds":
            assert self.embeds_buf is not None
            hidden = self.model.forward(self.cache, self.pos_buf, embeds=self.embeds_buf[:bucket],
                                        kv_len=kv_rows, compiled=self.compile)
            return None, hidden
        x = self.model.forward(self.cache, self.pos_buf, tokens=self.tokens_buf[:bucket],
                               kv_len=kv_rows, compiled=self.compile, prenorm=True)
        logits, hidden = self.model.step_logits(x)
        if kind == "greedy":
            chosen = logits[:1].argmax(-1)  # [1]: the first maximum, as torch.argmax on the host
            self.history.index_copy_(0, self.pos_buf.reshape(1) + 1, chosen)
            self.tokens_buf[:1].copy_(chosen)
            self.pos_buf.add_(1)
        return logits, hidden

    def _load_tokens(self, tokens: torch.Tensor) -> None:
        t = int(tokens.numel())
        if tokens.device == self.tokens_buf.device or self._host_tokens is None:
            self.tokens_buf[:t].copy_(tokens.reshape(-1))
        else:  # CPU ids -> pinned staging -> async copy (no host sync)
            if self._host_ready is None:
                self._host_ready = torch.cuda.Event()  # one event, recorded after every copy
            else:
                self._host_ready.synchronize()  # the previous copy has left the staging buffer
            self._host_tokens[:t].copy_(tokens.reshape(-1))
            self.tokens_buf[:t].copy_(self._host_tokens[:t], non_blocking=True)
            self._host_ready.record()

    def _run_step(self, kind: StepKind, bucket: int, kv_rows: int) -> tuple[torch.Tensor | None, torch.Tensor]:
        if self.compile and bucket not in self.stats.compiled_buckets:
            t0 = time.perf_counter()
            with _compile_limits():
                out = self._eager_step(kind, bucket, kv_rows)
            if self.tokens_buf.device.type == "cuda":
                torch.cuda.synchronize(self.tokens_buf.device)
            self.stats.compile_ms += (time.perf_counter() - t0) * 1e3
            self.stats.compiled_buckets.append(bucket)
            return out
        return self._eager_step(kind, bucket, kv_rows)

    def _capture(self, kind: StepKind, bucket: int, kv_rows: int) -> tuple[torch.cuda.CUDAGraph, torch.Tensor | None, torch.Tensor]:
        device = self.tokens_buf.device
        torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        # a greedy step moves its own token and position: each warm-up starts where the replay will
        kept = (self.tokens_buf[:1].clone(), self.pos_buf.clone()) if kind == "greedy" else None

        def restore() -> None:
            if kept is not None:
                self.tokens_buf[:1].copy_(kept[0])
                self.pos_buf.copy_(kept[1])

        graph, (logits, hidden) = capture_graph(  # the warm-up also compiles
            device, self._pool, lambda: (restore(), self._run_step(kind, bucket, kv_rows)),
            lambda: self._eager_step(kind, bucket, kv_rows))
        restore()
        self.stats.capture_ms += (time.perf_counter() - t0) * 1e3
        self.stats.graphs += 1
        self.stats.shapes.append((kind, bucket, kv_rows))
        return graph, logits, hidden

    def _execute(self, kind: StepKind, bucket: int, kv_rows: int) -> tuple[torch.Tensor | None, torch.Tensor]:
        if not self.cuda_graphs:
            self.stats.eager_steps += 1
            return self._run_step(kind, bucket, kv_rows)
        entry = self._graphs.get((kind, bucket, kv_rows))
        if entry is None:
            entry = self._graphs[(kind, bucket, kv_rows)] = self._capture(kind, bucket, kv_rows)
        graph, logits, hidden = entry
        graph.replay()
        self.stats.replays += 1
        return logits, hidden

    # -- public ----------------------------------------------------------------------------
    def plan(self, count: int, start: int, kind: StepKind = "tokens") -> tuple[int, int]:
        """``(bucket, kv_rows)`` of a step feeding ``count`` tokens (or embeddings) at ``start``."""
        bucket = bucket_for(count, self.buckets if kind == "tokens" else self.prefill_buckets)
        return bucket, kv_rows_for(start + bucket, self.kv_granularity, self.cache.capacity)

    def step_shapes(self, sizes: Iterable[int], start: int, upto: int) -> list[tuple[int, int]]:
        """``(bucket, kv_rows)`` of every token step :meth:`run` takes for a step of a size
        in ``sizes`` starting at any position in ``[start, upto]`` that fits ``max_len``
        (sorted, distinct): exactly the shapes a graph is captured for."""
        if start < 0 or upto < start:
            raise ValueError(f"step_shapes needs 0 <= start <= upto, got start {start}, upto {upto}")
        cap, g = self.cache.capacity, self.kv_granularity
        out: set[tuple[int, int]] = set()
        for size in sorted({int(x) for x in sizes}):
            if size < 1:
                raise ValueError(f"step sizes must be >= 1, got {size}")
            last = min(upto, self.cache.max_len - size)  # the latest start this size fits at
            if last < start:
                continue
            bucket = bucket_for(size, self.buckets)
            kv, hi = kv_rows_for(start + bucket, g, cap), kv_rows_for(last + bucket, g, cap)
            while True:
                out.add((bucket, kv))
                if kv >= hi:
                    break
                kv = min(kv + g, cap)
        return sorted(out)

    def prepare(self, sizes: Iterable[int], start: int, upto: int, *, scratch: int,
                greedy: bool = False) -> list[tuple[int, int]]:
        """Capture (CUDA graphs) or compile now every token step of :meth:`step_shapes`
        that is not ready yet, so that no later :meth:`run` captures or compiles.

        ``scratch``: the first cache row these untimed steps may write (>= the valid length
        of any state or in-place prefix on this cache); they write rows ``scratch ..
        scratch + bucket - 1`` only (attention rows past a query's position are masked, so
        any ``kv_rows`` is safe there).  ``greedy``: also the one-token steps of :meth:`chain`
        (over the same positions).  Returns the ``(bucket, kv_rows)`` of each graph captured (a
        pair twice with ``greedy``): none when steps run eagerly (CPU), one per bucket when
        compiling without graphs.
        """
        shapes = self.step_shapes(sizes, start, upto)
        if not (self.cuda_graphs or self.compile):
            return []
        if scratch < 0 or scratch + max((b for b, _ in shapes), default=0) > self.cache.capacity:
            raise ValueError(
                f"prepare: scratch row {scratch} leaves no room for the steps in a cache of "
                f"{self.cache.capacity} rows"
            )
        jobs = [("tokens", b, kv) for b, kv in shapes]
        if greedy and self.cuda_graphs:
            jobs += [("greedy", b, kv) for b, kv in self.step_shapes([1], start, upto)]
        made: list[tuple[int, int]] = []
        self._chain_end = None  # the scratch steps move the device's token and position
        for kind, bucket, kv_rows in jobs:
            if self.cuda_graphs:
                if (kind, bucket, kv_rows) in self._graphs:
                    continue
            elif bucket in self.stats.compiled_buckets:
                continue
            self.pos_buf.fill_(scratch)
            if self.cuda_graphs:
                self._execute(kind, bucket, kv_rows)  # captures, then replays once
            else:
                self._run_step(kind, bucket, kv_rows)  # compiles the bucket
            made.append((bucket, kv_rows))
        return made

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
        self._load_tokens(tokens)
        self.pos_buf.fill_(start)
        self._chain_end = None
        logits, hidden = self._execute("tokens", bucket, kv_rows)
        assert logits is not None
        return logits[:t].clone(), (hidden[:t].clone() if return_hidden else None)

    def run_embeds(self, embeds: torch.Tensor, start: int) -> torch.Tensor:
        """Feed ``embeds`` ``[T, H]`` (T <= the largest prefill bucket) at positions
        ``start ..`` as a padded fixed-shape step; returns hidden ``[T, H]`` (fresh)."""
        if not self.prefill_buckets:
            raise ValueError("run_embeds needs prefill_buckets (enable_fast(prefill_buckets=...))")
        t = int(embeds.shape[0])
        if t < 1:
            raise ValueError("a step needs at least one embedding")
        self.cache.check_fits(start, t)
        bucket, kv_rows = self.plan(t, start, "embeds")
        if self.embeds_buf is None:
            self.embeds_buf = torch.zeros(self.prefill_buckets[-1], embeds.shape[1],
                                          dtype=self.model.dtype, device=self.tokens_buf.device)
        self.embeds_buf[:t].copy_(embeds)
        self.pos_buf.fill_(start)
        self._chain_end = None
        _, hidden = self._execute("embeds", bucket, kv_rows)
        return hidden[:t].clone()

    def chain(self, start: int, steps: int, first: torch.Tensor | None = None) -> torch.Tensor:
        """Greedy decoding without the host: ``steps`` one-token steps at positions
        ``start ..``, each feeding the argmax of the step before (on the device: the token
        and the position never leave it), so the launches queue up ahead of the GPU.

        ``first``: the token at ``start`` (one id, CPU or device); ``None`` continues where
        the previous :meth:`chain` stopped (which must be ``start``).  Returns the ``steps``
        chosen ids ``[steps]`` on the device (a fresh tensor; no host synchronisation).
        Writes the keys/values; moving the cache's length is the caller's job."""
        if steps < 1:
            raise ValueError(f"a chain needs at least one step, got {steps}")
        self.cache.check_fits(start, steps)
        if first is None:
            if self._chain_end != start:
                raise ValueError(f"no chain stopped at position {start} (last: {self._chain_end}); pass first")
        else:
            self._load_tokens(first.reshape(1))
            self.pos_buf.fill_(start)
        for i in range(steps):
            bucket, kv_rows = self.plan(1, start + i)
            self._execute("greedy", bucket, kv_rows)
        self._chain_end = start + steps
        return self.history[start + 1:start + 1 + steps].clone()
