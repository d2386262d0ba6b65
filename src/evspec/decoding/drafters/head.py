"""``event-head`` / ``target-head``: draft with a small trained head on the target's own
hidden states (EAGLE-style), optionally cross-attending to EventGPT's event memory
(``evspec.modules.head``).  Cost per drafted token: 1–2 small blocks + the target's
``lm_head``, so c ≈ 0.05 at 7B.

Bookkeeping (position ``j`` = the target state ``h_j`` that predicted token ``x_j``).  The
head's cache holds positions built from *true* target states only; known-true pairs
``(h_j, x_j)`` not yet in the cache wait in ``pending``.

* ``begin``: ``pending = [(h_0, x_0)]`` (the prompt's last state, the first token).
* ``propose(k)``: feed ``pending`` (one pass) -> ``f`` at the last verified position ->
  ``d_1 = argmax lm_head(f)``; then ``k - 1`` steps feeding ``(f, d_i)`` (its own feature in
  place of the unknown target state).  Those speculative positions sit after the
  ``committed`` ones.
* ``accept(n, t, target_hidden [n + 1, H])``: drop every speculative position (they were
  built from predicted features) and queue the ``n + 1`` verified pairs
  ``(h, x) = zip(target_hidden, d_1..d_n, t)``: recomputed from true states next round.

With the fast engine on CUDA graphs (``target.fast``) or ``static=True`` the same steps run over
fixed-size buffers (:class:`~evspec.modules.head_static.StaticHeadRunner`), captured as
CUDA graphs on a GPU: one replay feeds the verified pairs, one replay drafts the greedy
chain.  A head over EventGPT's prompt states (varying memory length) stays eager.  For
small heads the runner folds the memory cross-attention into one Triton kernel per step
(:mod:`~evspec.modules.head_fused`; ``fold_memory`` forces either way).

The event side costs one thing per request and nothing per drafted token: EventGPT's event
memory turned into the head's cross-attention keys/values (:meth:`DraftHead.drafting_memory`),
which every drafted token then reads (inside the captured steps on the static path).  When
either model has its prefix cache on, those keys/values are kept per clip (keyed like the
prefix cache: clip id + a media fingerprint) and the clip's next questions skip the event
side entirely.  ``prefetch`` (called by the engine before the target's prefill) computes
them on a side CUDA stream, beside the target's vision tower and prefill.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch

from evspec.decoding.drafters.base import DrafterError, empty_draft
from evspec.decoding.protocols import Draft, Target
from evspec.decoding.sampling import logits_to_probs
from evspec.models.request import Request
from evspec.models.state import TargetState


class HeadDrafter:
    """A :class:`~evspec.modules.head.DraftHead` behind the ``Drafter`` protocol."""

    needs_target_hidden = True

    def __init__(
        self,
        head: torch.nn.Module,
        target: Any,
        *,
        name: str,
        draft_model: Any = None,
        top_p: float = 1.0,
        static: bool | None = None,
        memory_cache_clips: int = 4,
        overlap_events: bool = True,
        fold_memory: bool | None = None,
    ) -> None:
        cfg = head.config
        if cfg.has_memory and draft_model is None:
            raise DrafterError(f"drafter {name!r} reads EventGPT's event memory: pass a draft model (--draft-model)")
        width = int(target.lm_head.weight.shape[1])
        if cfg.hidden_size != width:
            raise DrafterError(f"head width {cfg.hidden_size} != the target's hidden width {width}")
        self.head, self.target, self.draft_model = head, target, draft_model
        self.name, self.top_p = name, top_p
        self.embed = target.decoder.embed_tokens
        self.lm_head = target.lm_head
        self.timings: dict[str, float] = {}
        self._cache = None
        self._pending: list[tuple[torch.Tensor, int]] = []
        self._proposed: list[int] = []
        self._committed = 0
        if static and cfg.memory_source == "prefill":
            raise DrafterError(f"drafter {name!r}: a head over EventGPT's prompt states cannot run static")
        self.static = static  # None: static exactly when the target replays CUDA graphs
        self._runner = None  # StaticHeadRunner, built at the first static request
        self.fold_memory = fold_memory  # the runner's folded cross-attention (None: automatic)
        self._use_runner = False
        self._memories: OrderedDict[tuple, list] = OrderedDict()  # clip key -> memory keys/values
        self.memory_cache_clips = memory_cache_clips
        self.overlap_events = overlap_events  # prefetch(): the memory beside the target's prefill
        self._prefetched: tuple | None = None  # (request, keys/values, timings, CUDA event | None)
        self._stream = None  # the side CUDA stream of prefetch()

    @property
    def memory_folded(self) -> bool | None:
        """Whether the last request drafted with the folded memory cross-attention (the
        static runner's :mod:`~evspec.modules.head_fused` path); None off the static path."""
        from evspec.modules.head_fused import FoldedMemory

        runner = self._runner if self._use_runner else None
        if runner is None or runner.mem is None:
            return None
        return isinstance(runner.mem[0], FoldedMemory)

    # -- helpers -------------------------------------------------------------------------
    def _logits(self, f: torch.Tensor) -> torch.Tensor:
        """``f`` ``[H]`` -> float32 logits ``[V]`` through the target's ``lm_head``."""
        w = self.lm_head.weight
        return self.lm_head(f.to(w.device, w.dtype)).float()

    def _emb(self, ids: list[int]) -> torch.Tensor:
        w = self.embed.weight
        return self.embed(torch.tensor(ids, dtype=torch.long, device=w.device))  # [T, H]

    def _wants_static(self) -> bool:
        if self.head.config.memory_source == "prefill":
            return False
        if self.static is not None:
            return self.static
        fast = getattr(self.target, "fast", None)  # on the CPU the eager head is cheaper
        return fast is not None and bool(getattr(getattr(fast, "config", None), "cuda_graphs", False))

    def _memory_key(self, request: Request) -> tuple | None:
        """The per-clip cache key of ``request``'s event memory, or None when it is not
        reused: reuse follows the models' prefix caches (a clip's media are computed once
        per clip on either side, or on neither)."""
        from evspec.models.fast.prefix_cache import media_fingerprint

        models = (self.draft_model, self.target)
        cached = any(getattr(m, "prefix_cache", None) is not None for m in models)
        if request.clip_id is None or self.memory_cache_clips < 1 or not cached:
            return None
        source = self.head.config.memory_source
        return (request.clip_id, media_fingerprint(request.event_images), source)

    def _compute_memory_kv(
        self, request: Request, *, untimed: bool = False
    ) -> tuple[list, dict[str, float]]:
        """EventGPT's event memory of ``request`` -> the head's memory keys/values per
        block (the only per-request work of the event side) and the milliseconds spent.
        ``untimed``: no device synchronisation around the stages (a side stream's work must
        not wait for the main stream's); the timings are then empty."""
        from evspec.modules.memory import event_embeds, event_memory

        if request.event_images is None:
            raise DrafterError(f"drafter {self.name!r} needs Request.event_images (its event memory)")
        try:
            if untimed and self.head.config.memory_source == "events":
                memory, t = event_embeds(self.draft_model, request, untimed=True)
            else:
                memory, t = event_memory(self.draft_model, request, self.head.config.memory_source)
        except ValueError as exc:
            raise DrafterError(f"drafter {self.name!r} cannot read this request's events: {exc}") from exc
        with torch.inference_mode():
            kv = self.head.drafting_memory(memory)
        return kv, t

    def _remember(self, key: tuple | None, kv: list) -> None:
        if key is None:
            return
        self._memories[key] = kv
        while len(self._memories) > self.memory_cache_clips:
            self._memories.popitem(last=False)

    def prefetch(self, request: Request) -> None:
        """Start ``request``'s event memory before the target's prefill (the engine calls
        this first): on CUDA on a side stream, so EventGPT's vision tower runs while the
        target encodes the video and prefills; elsewhere at once.  :meth:`begin` picks it
        up (or the per-clip cache already has it, and nothing runs)."""
        self._prefetched = None
        if not self.head.config.has_memory or not self.overlap_events:
            return
        key = self._memory_key(request)
        if key is not None and key in self._memories:
            return
        device = self.head.fc.weight.device
        if not _same_gpu(device, getattr(self.draft_model, "device", device)):  # no overlap
            kv, t = self._compute_memory_kv(request)
            self._prefetched = (request, kv, t, None)
            return
        if self._stream is None:
            self._stream = torch.cuda.Stream(device)
        main = torch.cuda.current_stream(device)
        self._stream.wait_stream(main)  # the inputs the main stream wrote so far
        with torch.cuda.stream(self._stream):
            kv, t = self._compute_memory_kv(request, untimed=True)
            done = torch.cuda.Event()
            done.record(self._stream)
        for k, v in kv:  # the main stream reads them: the allocator must not reuse them early
            k.record_stream(main)
            v.record_stream(main)
        self._prefetched = (request, kv, t, done)

    def _memory_kv(self, request: Request) -> list:
        """The request's memory keys/values: prefetched, cached for its clip, or computed now."""
        key = self._memory_key(request)
        prefetched, self._prefetched = self._prefetched, None
        if key is not None and key in self._memories:
            self._memories.move_to_end(key)
            return self._memories[key]
        if prefetched is not None and prefetched[0] is request:
            _, kv, t, done = prefetched
            if done is not None:
                torch.cuda.current_stream(self.head.fc.weight.device).wait_event(done)
        else:
            kv, t = self._compute_memory_kv(request)
        self.timings.update(t)
        self._remember(key, kv)
        return kv

    # -- Drafter protocol --------------------------------------------------------------
    def begin(self, request: Request, target: Target, state: TargetState, first_token: int) -> None:
        if state.last_hidden is None:
            raise DrafterError(f"drafter {self.name!r} needs the target's hidden states (prefill return_hidden)")
        self.timings = {}
        mem_kv = self._memory_kv(request) if self.head.config.has_memory else None
        self._use_runner = self._wants_static()
        with torch.inference_mode():
            if self._use_runner:
                if self._runner is None:
                    from evspec.modules.head_static import StaticHeadRunner

                    self._runner = StaticHeadRunner(self.head, self.embed, self.lm_head,
                                                    fold_memory=self.fold_memory)
                self._runner.begin(memory_kv=mem_kv)
                self._cache = self._runner
            else:
                self._cache = self.head.new_cache(memory_kv=mem_kv)
        self._pending = [(state.last_hidden, int(first_token))]
        self._proposed = []
        self._committed = 0

    @torch.inference_mode()
    def propose(self, k: int, temperature: float, generator: torch.Generator | None) -> Draft:
        cache = self._cache  # a HeadCache, or the StaticHeadRunner (same length/truncate)
        if cache is None:
            raise RuntimeError("propose() before begin()")
        runner = self._runner if self._use_runner else None
        room = self.head.config.max_positions - cache.length - len(self._pending)
        k = max(0, min(k, room, runner.max_chain if runner is not None else k))
        if k == 0 or not self._pending:
            self._proposed = []
            return empty_draft(self.lm_head.weight.device)
        hidden = torch.stack([h for h, _ in self._pending])  # [P, H]
        fed = [x for _, x in self._pending]
        if runner is not None:
            f = runner.feed(hidden, fed)  # a view of the runner's buffer, rewritten only by the next feed
        else:
            f = self.head.extend(cache, hidden, self._emb(fed))[-1]  # [H]
        self._committed = cache.length
        self._pending = []
        if runner is not None and temperature == 0:  # the whole greedy chain is one graph replay
            ids = runner.greedy_chain(k).cpu()  # [k], one sync per round
            self._proposed = ids.tolist()
            return Draft(tokens=ids, probs=None)
        tokens: list[torch.Tensor] = []  # 0-d device tensors: no host sync until the end
        probs: list[torch.Tensor] = []
        for i in range(k):
            logits = self._logits(f)  # [V]
            if temperature == 0:
                tok = torch.argmax(logits)
            else:
                q = logits_to_probs(logits, temperature, self.top_p)
                tok = torch.multinomial(q, 1, generator=generator)[0]
                probs.append(q)
            tokens.append(tok)
            if i < k - 1:  # the head's own feature stands in for the unknown target state
                if runner is not None:
                    f = runner.extend_one(f, tok, i)
                else:
                    emb = self.embed(tok.reshape(1).to(self.embed.weight.device))  # [1, H]
                    f = self.head.extend(cache, f[None], emb)[0]
        ids = torch.stack(tokens).cpu()  # [k], one sync per round
        self._proposed = ids.tolist()
        return Draft(tokens=ids, probs=torch.stack(probs) if probs else None)

    def accept(self, n_accepted: int, next_token: int, target_hidden: torch.Tensor | None = None) -> None:
        if self._cache is None:
            raise RuntimeError("accept() before begin()")
        k = len(self._proposed)
        if not 0 <= n_accepted <= k:
            raise ValueError(f"accepted {n_accepted} of {k} drafts")
        if target_hidden is None or target_hidden.shape[0] != n_accepted + 1:
            raise ValueError(
                f"drafter {self.name!r} needs target_hidden [n + 1, H] = [{n_accepted + 1}, H]; got "
                f"{None if target_hidden is None else tuple(target_hidden.shape)}"
            )
        if k:
            self._cache.truncate(self._committed)  # drop the speculative positions
        tokens = self._proposed[:n_accepted] + [int(next_token)]
        self._pending.extend(zip(target_hidden, tokens))
        self._proposed = []

    def prepare_steps(self, max_gamma: int) -> int:
        """Capture the fixed-shape steps rounds of up to ``max_gamma`` drafts take (after a
        first request built the static runner; a no-op on the eager path or without CUDA
        graphs).  Returns the graphs made."""
        if self._runner is None or not self._use_runner:
            return 0
        return self._runner.prepare(max_gamma + 1, max_gamma)

    def end(self) -> None:
        self._cache = None
        self._pending = []
        self._proposed = []

    def clear_cache(self) -> None:
        """Forget the per-clip event memories (a cold-cache benchmark run)."""
        self._memories.clear()


def _same_gpu(a: torch.device | str, b: torch.device | str) -> bool:
    """Whether ``a`` and ``b`` are one CUDA device (a side stream overlaps work only there)."""
    a, b = torch.device(a), torch.device(b)
    if a.type != "cuda" or b.type != "cuda":
        return False
    current = torch.cuda.current_device()
    return (a.index if a.index is not None else current) == (b.index if b.index is not None else current)


def make_head_drafter(
    name: str, target: Any, draft_model: Any, head_path: str | Path, *, label: str | None = None,
    top_p: float = 1.0, static: bool | None = None, fold_memory: bool | None = None,
) -> HeadDrafter:
    """Load a trained ``event-head`` / ``target-head`` checkpoint for ``target``;
    ``head_path="untrained"`` builds one with random weights and the shapes training would
    give (acceptance-controlled timing at real scale, where no trained head exists)."""
    from evspec.modules.checkpoint import load_checkpoint
    from evspec.decoding.drafters import UNTRAINED

    if str(head_path) == UNTRAINED:
        return _untrained_head(name, target, draft_model, label=label, top_p=top_p,
                               static=static, fold_memory=fold_memory)
    ckpt = load_checkpoint(head_path)
    if ckpt.kind != name:
        raise DrafterError(f"{head_path}: a {ckpt.kind} checkpoint, but drafter {name!r} was asked for")
    try:
        ckpt.check_target(target.lm_head.weight)
    except ValueError as exc:
        raise DrafterError(str(exc)) from exc
    w = target.lm_head.weight
    head = ckpt.build(device=w.device, dtype=w.dtype if w.dtype != torch.float16 else torch.float32)
    if head.config.has_memory and draft_model is not None:
        width = int(draft_model.lm_head.weight.shape[1])
        if head.config.memory_size != width:
            raise DrafterError(f"{head_path}: memory width {head.config.memory_size} != EventGPT's {width}")
    return HeadDrafter(head, target, name=label or name, draft_model=draft_model, top_p=top_p,
                       static=static, fold_memory=fold_memory)


def _untrained_head(
    name: str, target: Any, draft_model: Any, *, label: str | None, top_p: float,
    static: bool | None, fold_memory: bool | None,
) -> HeadDrafter:
    from evspec.modules.checkpoint import build_module
    from evspec.modules.options import ModuleOptions, module_config

    if name == "event-head" and draft_model is None:
        raise DrafterError("drafter 'event-head' needs a draft model for its event memory (--draft-model)")
    w = target.lm_head.weight
    dims = {"target_hidden": int(w.shape[1]),
            "draft_hidden": int(draft_model.lm_head.weight.shape[1]) if draft_model is not None else 0}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        head = build_module(name, module_config(name, dims, ModuleOptions()))
    dtype = w.dtype if w.dtype != torch.float16 else torch.float32
    head = head.to(device=w.device, dtype=dtype).eval()
    return HeadDrafter(head, target, name=label or name, draft_model=draft_model, top_p=top_p,
                       static=static, fold_memory=fold_memory)
