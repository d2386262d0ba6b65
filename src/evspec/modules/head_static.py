"""The draft head's drafting steps over fixed-size buffers, replayable as CUDA graphs.

With the fast engine the target's step is a replayed CUDA graph (~1 ms for the world
models on an H200), while an eager :meth:`DraftHead.extend` launches some forty small
kernels per drafted token and costs more than the target step it should save
(benchmarks/world.md: c 0.66–1.28).  :class:`StaticHeadRunner` runs the same
arithmetic with every shape fixed:

* the head's keys/values live in buffers of ``capacity`` rows; positions are a 0-d device
  tensor ``pos``; new rows are written with ``index_copy_`` and attention runs over all
  ``capacity`` rows under a mask ``key <= query position`` (masked rows weigh exactly 0);
* the event memory's keys/values are copied into fixed buffers at :meth:`begin`, or, where
  Triton runs and it pays (``fold_memory``), the cross-attention folded into two fixed
  matrices per block (:mod:`~evspec.modules.head_fused`): one kernel per drafted token
  instead of about ten;
* two step kinds: ``feed(P)`` appends ``P`` verified ``(hidden, token)`` pairs and keeps
  the last feature; ``chain(k)`` turns that feature into ``k`` greedy drafts, feeding each
  draft back (``k - 1`` one-row extends) — exactly :class:`~evspec.decoding.drafters.head.HeadDrafter`'s
  eager loop.  Speculative rows written by a chain sit beyond ``length`` and are
  overwritten next round, so rollback is free.

On CUDA (``cuda_graphs``) each ``feed(P)`` and ``chain(k)`` is captured at first use (two
warm-up runs on a side stream, then capture, graphs sharing one memory pool) and replayed
afterwards: one launch per step kind per round.  Elsewhere the very same code runs
eagerly, which is what the CPU tests check against the eager head.  Sampling
(temperature > 0) uses :meth:`extend_one` eagerly between host-side draws.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch

from evspec.modules.head import DraftHead
from evspec.modules.head_fused import FoldedMemory, fold_pays
from evspec.modules.head_fused import fold_memory as fold_block_memory
from evspec.models.fast.triton_support import available as triton_available
from evspec.models.fast.graphs import capture_graph


class StaticHeadRunner:
    """Fixed-shape drafting for one :class:`DraftHead` with the target's ``embed`` and
    ``lm_head``.  ``max_feed``: the most pairs one round feeds (γ + 1);
    ``max_chain``: the longest chain (γ)."""

    def __init__(
        self,
        head: DraftHead,
        embed: torch.nn.Module,
        lm_head: torch.nn.Module,
        *,
        max_feed: int = 17,
        max_chain: int = 16,
        cuda_graphs: bool | None = None,
        fold_memory: bool | None = None,
    ) -> None:
        if head.config.memory_source == "prefill":
            raise ValueError("a head over EventGPT's prompt states (memory_source='prefill') has a "
                             "memory of varying length; it drafts on the eager path")
        p = head.fc.weight
        self.head, self.embed, self.lm_head = head, embed, lm_head
        self.device, self.dtype = p.device, p.dtype
        self.max_feed, self.max_chain = int(max_feed), int(max_chain)
        self.capacity = head.config.max_positions + self.max_feed + self.max_chain
        self.cuda_graphs = (self.device.type == "cuda") if cuda_graphs is None else bool(cuda_graphs)
        if self.cuda_graphs and self.device.type != "cuda":
            raise ValueError("cuda_graphs needs the head on a CUDA device")
        cfg = head.config
        h, d = cfg.num_heads, cfg.hidden_size // cfg.num_heads
        shape = (1, h, self.capacity, d)
        self.keys = [p.new_zeros(shape) for _ in head.blocks]
        self.values = [p.new_zeros(shape) for _ in head.blocks]
        self.mem: list | None = None  # per block: memory (keys, values), or its FoldedMemory
        # the memory cross-attention folded (head_fused); None: where Triton runs and it pays
        self.fold_memory = fold_memory
        self._kernel_ok: bool | None = None  # the automatic choice's check of the kernel
        rotary = head.blocks[0].attn.rotary
        self.cos, self.sin = rotary.tables(self.capacity, self.device, self.dtype)
        self.key_pos = torch.arange(self.capacity, device=self.device)  # [C]
        self.offsets = torch.arange(max(self.max_feed, 1), device=self.device)  # [F]
        self.pos = torch.zeros((), dtype=torch.long, device=self.device)
        self.hid_buf = p.new_zeros(self.max_feed, cfg.hidden_size)
        self.tok_buf = torch.zeros(self.max_feed, dtype=torch.long, device=self.device)
        self.feature = p.new_zeros(cfg.hidden_size)
        self.drafts = torch.zeros(self.max_chain, dtype=torch.long, device=self.device)
        self.length = 0
        self._graphs: dict[tuple[str, int], torch.cuda.CUDAGraph] = {}
        self._pool = torch.cuda.graph_pool_handle() if self.cuda_graphs else None  # shared by its graphs
        self.stats = {"graphs": 0, "capture_ms": 0.0, "replays": 0, "eager_steps": 0}

    # -- the arithmetic (fixed shapes) ---------------------------------------------------
    def _extend(self, hidden: torch.Tensor, embeds: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """Append ``T`` rows at positions ``pos .. pos + T - 1``; ``hidden``, ``embeds``
        ``[T, H]`` -> features ``[T, H]``.  :meth:`DraftHead.run_blocks` over the fixed buffers:
        new rows go in with ``index_copy_``, attention runs over all ``capacity`` rows."""
        head = self.head
        idx = pos + self.offsets[: hidden.shape[0]]  # [T]

        def store(i: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            self.keys[i].index_copy_(2, idx, k)
            self.values[i].index_copy_(2, idx, v)
            return self.keys[i], self.values[i]

        return head.run_blocks(
            head.fuse(hidden[None], embeds[None]),  # [1, T, H]
            self.cos.index_select(0, idx), self.sin.index_select(0, idx),
            self.key_pos[None, :] <= idx[:, None],  # [T, C]
            store, self.mem,
        )

    def _feed_fn(self, n: int) -> Callable[[], None]:
        def run() -> None:
            ids = self.tok_buf[:n]
            f = self._extend(self.hid_buf[:n], self.embed(ids).to(self.dtype), self.pos)
            self.feature.copy_(f[-1])
        return run

    def _chain_fn(self, k: int) -> Callable[[], None]:
        def run() -> None:
            f = self.feature
            w = self.lm_head.weight
            for i in range(k):
                tok = torch.argmax(self.lm_head(f.to(w.dtype)).float())
                self.drafts[i].copy_(tok)
                if i < k - 1:
                    emb = self.embed(tok.reshape(1)).to(self.dtype)  # [1, H]
                    f = self._extend(f[None], emb, self.pos + i)[0]
        return run

    def _run(self, kind: str, n: int, fn: Callable[[], None]) -> None:
        if not self.cuda_graphs:
            fn()
            self.stats["eager_steps"] += 1
            return
        graph = self._graphs.get((kind, n))
        if graph is None:
            t0 = time.perf_counter()
            graph, _ = capture_graph(self.device, self._pool, fn, fn)  # warm-ups write only what replays write
            self._graphs[(kind, n)] = graph
            self.stats["graphs"] += 1
            self.stats["capture_ms"] += (time.perf_counter() - t0) * 1e3
        graph.replay()
        self.stats["replays"] += 1

    @torch.inference_mode()
    def prepare(self, max_feed: int, max_chain: int) -> int:
        """Capture ``feed(1..max_feed)`` and ``chain(1..max_chain)`` now (with CUDA graphs;
        otherwise nothing to do), so no capture lands inside a timed round; returns the
        graphs made; a head with event memory needs :meth:`begin` first.  Writes only rows
        a later request overwrites before reading them (every row a step attends to was
        written earlier in the same request)."""
        if not self.cuda_graphs:
            return 0
        if self.head.config.has_memory and self.mem is None:
            raise ValueError("prepare needs begin(memory) first: a head with event memory captures "
                             "its steps over the memory's buffers, whose size begin sets")
        before = self.stats["graphs"]
        self.pos.fill_(0)
        for n in range(1, min(max_feed, self.max_feed) + 1):
            self._run("feed", n, self._feed_fn(n))
        for k in range(1, min(max_chain, self.max_chain) + 1):
            self._run("chain", k, self._chain_fn(k))
        self.length = 0
        return self.stats["graphs"] - before

    # -- one request --------------------------------------------------------------------
    @torch.inference_mode()
    def begin(
        self, memory: torch.Tensor | None = None, *,
        memory_kv: list[tuple[torch.Tensor, torch.Tensor]] | None = None,
    ) -> None:
        """Start a request: ``memory`` ``[M, H_d]`` for a head with event memory, or its
        keys/values ``memory_kv`` (:meth:`DraftHead.drafting_memory`), copied into the
        buffers the captured steps read."""
        self.length = 0
        if not self.head.config.has_memory:
            return
        kv = memory_kv if memory_kv is not None else self.head.drafting_memory(memory)
        assert kv is not None
        fold = self.fold_memory
        if fold is None:  # one kernel per drafted token where it runs and pays
            width, heads, m = self.head.config.hidden_size, kv[0][0].shape[1], kv[0][0].shape[2]
            fold = triton_available(self.device) and fold_pays(width, heads, m)
        if fold:
            folds = [fold_block_memory(blk, kv_i) for blk, kv_i in zip(self.head.blocks, kv)]
            if self.fold_memory is None:  # automatic: the kernel checked once on this device
                if self._kernel_ok is None:
                    self._kernel_ok = _kernel_agrees(folds[0])
                fold = self._kernel_ok
        if fold:
            same = (self.mem is not None and isinstance(self.mem[0], FoldedMemory)
                    and all(f.a.shape == g.a.shape and f.m == g.m for f, g in zip(folds, self.mem)))
            if not same:  # new memory size: new buffers (and graphs over them)
                self.mem = folds
                self._graphs.clear()
                return
            for buf, f in zip(self.mem, folds):
                buf.copy_(f)
            return
        if (self.mem is None or isinstance(self.mem[0], FoldedMemory)
                or self.mem[0][0].shape != kv[0][0].shape):  # new memory size: new buffers
            self.mem = [(k.clone(), v.clone()) for k, v in kv]
            self._graphs.clear()
            return
        for (k_buf, v_buf), (k, v) in zip(self.mem, kv):
            k_buf.copy_(k)
            v_buf.copy_(v)

    def truncate(self, length: int) -> None:
        """Keep the first ``length`` positions (as :meth:`HeadCache.truncate`; rows written
        beyond them are simply overwritten later)."""
        if not 0 <= length <= self.length:
            raise ValueError(f"cannot truncate a head runner of {self.length} positions to {length}")
        self.length = length

    @property
    def room(self) -> int:
        """Positions left before ``max_positions``."""
        return self.head.config.max_positions - self.length

    @torch.inference_mode()
    def feed(self, hidden: torch.Tensor, tokens: list[int]) -> torch.Tensor:
        """Append verified pairs (``hidden`` ``[P, H]``, ``tokens`` ``[P]``) at ``length``;
        returns the last feature ``[H]`` (the runner's buffer: copy it to keep it)."""
        n = len(tokens)
        if not 1 <= n <= self.max_feed:
            raise ValueError(f"feed of {n} pairs: the runner takes 1..{self.max_feed} (max_feed)")
        if self.length + n > self.head.config.max_positions:
            raise ValueError(f"draft head cache full: {self.length} + {n} exceed max_positions "
                             f"{self.head.config.max_positions}")
        self.hid_buf[:n].copy_(hidden.to(self.device, self.dtype), non_blocking=True)
        self.tok_buf[:n].copy_(torch.tensor(tokens, dtype=torch.long), non_blocking=True)
        self.pos.fill_(self.length)
        self._run("feed", n, self._feed_fn(n))
        self.length += n
        return self.feature

    @torch.inference_mode()
    def greedy_chain(self, k: int) -> torch.Tensor:
        """``k`` greedy drafts after the last :meth:`feed` -> device tensor ``[k]`` (a view of
        the runner's buffer).  The speculative rows it writes stay beyond ``length``."""
        if not 1 <= k <= self.max_chain:
            raise ValueError(f"chain of {k} drafts: the runner takes 1..{self.max_chain} (max_chain)")
        self.pos.fill_(self.length)
        self._run("chain", k, self._chain_fn(k))
        return self.drafts[:k]

    @torch.inference_mode()
    def extend_one(self, feature: torch.Tensor, token: torch.Tensor, offset: int) -> torch.Tensor:
        """Eager one-row extend at ``length + offset`` (a speculative row; sampling path)."""
        emb = self.embed(token.reshape(1).to(self.device)).to(self.dtype)
        return self._extend(feature[None].to(self.dtype), emb, self.pos.new_tensor(self.length + offset))[0]



def _kernel_agrees(fold: FoldedMemory) -> bool:
    """The automatic choice's one check of the folded kernel on this device: it compiles and
    matches its torch form on a random row; otherwise the runner keeps the unfolded
    cross-attention (and says so)."""
    import warnings

    from evspec.modules.head_fused import folded_cross, folded_cross_reference

    x = torch.randn(1, 1, fold.a.shape[0], device=fold.a.device, dtype=fold.a.dtype)
    try:
        got = folded_cross(x, fold)
    except Exception as exc:  # a Triton build or launch failure: keep the torch path
        warnings.warn(f"folded memory kernel unavailable ({type(exc).__name__}: {exc}); "
                      "the event-head keeps its unfolded cross-attention", stacklevel=3)
        return False
    ok = torch.allclose(got.float(), folded_cross_reference(x, fold).float(), rtol=1e-3, atol=1e-3)
    if not ok:
        warnings.warn("folded memory kernel disagrees with its torch form; the event-head keeps "
                      "its unfolded cross-attention", stacklevel=3)
    return ok
