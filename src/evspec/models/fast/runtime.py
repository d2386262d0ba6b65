"""The fast path of one model wrapper: a :class:`FastLlama`, its static caches (slots)
and their step runners.

A request's ``TargetState.cache`` is one slot's :class:`StaticKVCache`.  Graphs are bound
to a cache's buffers, so caches are allocated once and reused: a slot is free again when
the ``TargetState`` that acquired it has been garbage-collected (a weak reference), or
after :meth:`FastRuntime.release`.  Several live states per model (a model drafting for
itself: the target's and the drafter's) take several slots, up to ``max_slots``.

Which slot a prefill takes: a free one already holding the requested prompt prefix in
place (prefix cache), else one holding no prefix, else the least recently used free one,
else a new one (memory and graph captures are spent only when all are in use).
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field
from itertools import count
from typing import Any

import torch
from torch import nn

from evspec.models.fast.config import FastConfig
from evspec.models.fast.graphs import StepRunner
from evspec.models.fast.llama import FastLlama
from evspec.models.fast.static_cache import StaticKVCache

_clock = count()


@dataclass(eq=False)
class _Slot:
    cache: StaticKVCache
    runner: StepRunner
    owner: weakref.ReferenceType | None = None
    busy: bool = False  # acquired, owner not bound yet
    used: int = field(default_factory=lambda: next(_clock))

    def free(self) -> bool:
        return not self.busy and (self.owner is None or self.owner() is None)


class FastRuntime:
    """Static caches and step runners for one decoder (see the module docstring)."""

    def __init__(self, decoder: nn.Module, head: nn.Module, config: FastConfig) -> None:
        self.model = FastLlama(decoder, head, attention=config.attention, fuse=config.fuse,
                               kernels=config.kernels, exact=config.exact)
        self.config = config
        if config.exact and len(config.step_buckets) > 1 and not self.model.row_invariant_steps():
            raise ValueError(
                "FastConfig.exact without the row-invariant Triton kernels pads every step to one "
                f"row bucket; got buckets {config.step_buckets} "
                f"(pass buckets=({config.max_score_tokens},))"
            )
        if config.compile:  # wraps only: tracing happens at each bucket's first step
            self.model.compile(mode=config.compile_mode, backend=config.compile_backend,
                               prefill=config.compile_prefill)
        #: ms of the first compiled (any-length) prefill pass, compile included
        self.prefill_compile_ms = 0.0
        if config.cuda_graphs and self.model.device.type != "cuda":
            raise ValueError(
                f"enable_fast(cuda_graphs=True) needs the model on CUDA; it is on {self.model.device}"
            )
        self._slots: list[_Slot] = []

    # -- slots ------------------------------------------------------------------------------
    def _new_slot(self) -> _Slot:
        cfg = self.config
        with torch.inference_mode():
            cache = self.model.new_cache(cfg.max_len, slack=cfg.slack)
        runner = StepRunner(
            self.model,
            cache,
            buckets=cfg.step_buckets,
            kv_granularity=cfg.kv_granularity,
            cuda_graphs=cfg.cuda_graphs,
            compile=cfg.compile,
            compile_mode=cfg.compile_mode,
            compile_backend=cfg.compile_backend,
            prefill_buckets=cfg.prefill_buckets,
        )
        slot = _Slot(cache, runner)
        self._slots.append(slot)
        return slot

    def acquire(self, prefer: Hashable | None = None) -> StaticKVCache:
        """A free cache (length 0 unless the caller restores a prefix); bind it to its
        state with :meth:`bind`.  ``prefer``: a prefix key to find in place."""
        free = [s for s in self._slots if s.free()]
        pick = None
        if prefer is not None:
            pick = next((s for s in free if s.cache.prefix_key == prefer), None)
        if pick is None:
            pick = next((s for s in free if s.cache.prefix_key is None), None)
        if pick is None and free:  # evict the least recently used in-place prefix
            pick = min(free, key=lambda s: s.used)
        if pick is None and len(self._slots) < self.config.max_slots:
            pick = self._new_slot()
        if pick is None:
            raise RuntimeError(
                f"all {len(self._slots)} static KV caches are held by live TargetStates; "
                "drop old states (or call release(state)), or enable_fast(max_slots=...) higher"
            )
        pick.busy, pick.owner, pick.used = True, None, next(_clock)
        pick.cache.reset()
        return pick.cache

    def _slot(self, cache: StaticKVCache) -> _Slot:
        for slot in self._slots:
            if slot.cache is cache:
                return slot
        raise ValueError("this static cache does not belong to this model's fast runtime")

    def bind(self, cache: StaticKVCache, owner: Any) -> None:
        """Tie ``cache`` to ``owner`` (a ``TargetState``): free again once it is gone."""
        slot = self._slot(cache)
        slot.owner, slot.busy = weakref.ref(owner), False

    def owned_by(self, cache: StaticKVCache, state: Any) -> bool:
        """Whether ``cache`` is still bound to ``state`` (not handed to a newer request)."""
        slot = next((s for s in self._slots if s.cache is cache), None)
        return slot is not None and slot.owner is not None and slot.owner() is state

    def release(self, cache: StaticKVCache) -> None:
        """Free ``cache`` now (its prefix, if any, stays in place for reuse)."""
        slot = self._slot(cache)
        slot.owner, slot.busy = None, False

    # -- passes -----------------------------------------------------------------------------
    @torch.inference_mode()
    def prefill(self, cache: StaticKVCache, embeds: torch.Tensor) -> torch.Tensor:
        """Append ``embeds`` ``[T, H]`` at ``cache.length``; returns hidden ``[T, H]``.

        After cached positions (the question after a cached prefix) and with ``T`` up to
        the largest ``prefill_buckets`` size: a padded fixed-shape step (a CUDA graph).
        Otherwise one pass over exactly ``start + T`` rows (its layers compiled for any
        length with ``compile`` and ``compile_prefill``): from position 0 plain causal
        SDPA, later lower-right causal (flash/efficient kernels, no mask tensor)."""
        start, t = cache.length, int(embeds.shape[0])
        cache.check_fits(start, t)
        cache.invalidate_prefix_from(start)
        buckets = self.config.prefill_buckets
        if start > 0 and buckets and t <= buckets[-1]:
            hidden = self._slot(cache).runner.run_embeds(embeds, start)
        else:
            first = self.model.compiled_prefill and not self.prefill_compile_ms
            t0 = time.perf_counter()
            hidden = self.model.forward(cache, start, embeds=embeds.to(self.model.dtype), kv_len=start + t,
                                        compiled=self.config.compile, any_length=True)
            if first:
                if hidden.device.type == "cuda":
                    torch.cuda.synchronize(hidden.device)
                self.prefill_compile_ms = (time.perf_counter() - t0) * 1e3
        cache.advance(t)
        return hidden

    @torch.inference_mode()
    def step(
        self, cache: StaticKVCache, tokens: torch.Tensor, *, return_hidden: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Append ``tokens`` ``[T]``: ``(logits [T, V] float32, hidden [T, H] or None)``.
        Up to ``max_score_tokens`` through the bucketed (graph) runner; longer steps run
        as a prefill (a padded embeddings step up to the largest prefill bucket, else one
        exact-shape eager pass)."""
        slot = self._slot(cache)
        t = int(tokens.numel())
        if t > self.config.step_buckets[-1]:
            embeds = self.model.decoder.embed_tokens(tokens.to(self.model.device))  # [T, H]
            hidden = self.prefill(cache, embeds)
            return self.model.logits(hidden), (hidden if return_hidden else None)
        start = cache.length
        cache.invalidate_prefix_from(start)
        logits, hidden = slot.runner.run(tokens, start, return_hidden=return_hidden)
        cache.advance(t)
        return logits, hidden

    @torch.inference_mode()
    def chain(self, cache: StaticKVCache, steps: int, first: torch.Tensor | None = None) -> torch.Tensor:
        """Greedy decoding on the device after ``cache.length`` (:meth:`StepRunner.chain`):
        the ``steps`` chosen ids ``[steps]`` (device, not synchronised); ``first``: the token
        fed first (None: continue the previous chain on this cache)."""
        start = cache.length
        cache.invalidate_prefix_from(start)
        ids = self._slot(cache).runner.chain(start, steps, first)
        cache.advance(steps)
        return ids

    @torch.inference_mode()
    def prepare_steps(self, sizes: Iterable[int], *, start: int, upto: int, greedy: bool = False) -> int:
        """Capture (CUDA graphs) / compile, on every slot, each decode/score step of a size
        in ``sizes`` (e.g. ``1..γ+1``) that a request could take starting anywhere in
        ``[start, upto]`` — so that none is captured later inside a timed call.  Live
        states keep their rows (the untimed steps write after their valid length; free
        slots after their in-place prefix).  Returns the number of step shapes made
        ready (0 when steps run eagerly, e.g. on CPU).  Slots are created lazily: call
        this after a request has run with every drafter that will be timed.  ``greedy``:
        also the steps of :meth:`chain` (target-only greedy decoding)."""
        sizes = sorted({int(x) for x in sizes})
        too_big = [x for x in sizes if x > self.config.step_buckets[-1]]
        if too_big:
            raise ValueError(
                f"prepare_steps: step sizes {too_big} exceed max_score_tokens "
                f"{self.config.step_buckets[-1]}; raise enable_fast(max_score_tokens=...)"
            )
        made = 0
        for slot in self._slots:
            scratch = slot.cache.prefix_len if slot.free() else slot.cache.length
            made += len(slot.runner.prepare(sizes, start, upto, scratch=scratch, greedy=greedy))
        return made

    # -- reporting --------------------------------------------------------------------------
    @property
    def exact(self) -> bool:
        """Whether decode and score steps keep the numerics contract (``FastConfig.exact``)."""
        return self.config.exact

    @property
    def stats(self) -> dict[str, Any]:
        """Slots, cache memory, graphs captured, capture/compile ms, replays, eager steps,
        and the options in force."""
        runs = [s.runner.stats for s in self._slots]
        return {
            "slots": len(self._slots),
            "cache_mb": sum(s.cache.nbytes for s in self._slots) / 2**20,
            "graphs": sum(r.graphs for r in runs),
            "capture_ms": sum(r.capture_ms for r in runs),
            "compile_ms": sum(r.compile_ms for r in runs),
            "prefill_compile_ms": self.prefill_compile_ms,
            "replays": sum(r.replays for r in runs),
            "eager_steps": sum(r.eager_steps for r in runs),
            "cuda_graphs": self.config.cuda_graphs,
            "compile": self.config.compile,
            "max_len": self.config.max_len,
            "attention": self.config.attention,
            "fuse": self.config.fuse,
            "kernels": self.config.kernels,
            "exact": self.config.exact,
            "prefill_buckets": list(self.config.prefill_buckets),
            "compiled_buckets": sorted({b for r in runs for b in r.compiled_buckets}),
        }
