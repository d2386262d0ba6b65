"""Shared decoding mechanics over a transformers decoder: prefill from embeddings, score
k tokens in one pass, roll back the KV cache.

Both wrappers (Video-LLaVA target, EventGPT drafter) subclass :class:`CausalLMWrapper`
and only say how the multimodal prompt embedding is built.  They therefore satisfy the
``Target`` protocol of ``evspec.decoding.protocols`` alike, so either model can verify or
draft (drafter == target is a test case).

The prefix cache (``enable_prefix_cache``, ``_prefill_prefixed``) is the mixin
:class:`~evspec.models.causal_lm_prefix.PrefixCacheMixin`; :func:`sync` and :func:`timed`
live in ``models.timing`` (both re-exported here).
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import DynamicCache

from evspec.models import kv
from evspec.models.causal_lm_prefix import PrefixBuilder, PrefixCacheMixin
from evspec.models.fast.config import FastConfig, compile_buckets
from evspec.models.fast.fused import can_fuse
from evspec.models.fast.runtime import FastRuntime
from evspec.models.fast.static_cache import StaticKVCache
from evspec.models.quant import is_4bit
from evspec.models.state import ScoreOutput, TargetState
from evspec.models.timing import sync, timed

__all__ = ["CausalLMWrapper", "PrefixBuilder", "sync", "timed"]


class CausalLMWrapper(PrefixCacheMixin):
    """Subclasses set ``self.decoder`` (a transformers base decoder such as ``LlamaModel``
    returning ``last_hidden_state``), ``self.lm_head``, ``self.tokenizer``,
    ``self.eos_token_id``, ``self.max_context`` and ``self.vocab_size``.

    Two opt-in switches (never on at construction):

    * :meth:`enable_fast`: prefill/score/rollback run :class:`~evspec.models.fast.llama.FastLlama`
      over a static KV cache (O(1) rollback), with the fixed-size steps replayed as CUDA
      graphs on CUDA, fused q/k/v and gate/up weights, optionally compiled layers.
      ``TargetState.cache`` then holds a
      :class:`~evspec.models.fast.static_cache.StaticKVCache`.
    * :meth:`enable_prefix_cache`: subclasses whose prompt is ``prefix (media) + suffix
      (question)`` compute the prefix once per ``Request.clip_id``
      (:meth:`_prefill_prefixed`).
    """

    decoder: nn.Module
    lm_head: nn.Module
    eos_token_id: int
    max_context: int
    vocab_size: int

    _fast: FastRuntime | None = None
    _dynamic_max_context: int | None = None

    @property
    def device(self) -> torch.device:
        return self.lm_head.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.lm_head.weight.dtype

    # -- switches ----------------------------------------------------------------------
    def enable_fast(
        self,
        max_len: int | None = None,
        *,
        cuda_graphs: bool | None = None,
        compile: bool = False,
        max_score_tokens: int = 16,
        buckets: tuple[int, ...] | None = None,
        kv_granularity: int = 256,
        max_slots: int = 2,
        compile_mode: str | None = None,
        attention: str = "auto",
        fuse: bool | None = None,
        prefill_buckets: tuple[int, ...] | None = None,
        compile_backend: str = "inductor",
        compile_prefill: bool = True,
        kernels: str = "torch",
        score_sizes: tuple[int, ...] = (),
        exact: bool | None = None,
    ) -> FastRuntime:
        """Run prefill/score/rollback on the fast path (see :class:`FastConfig` for the
        options).  ``max_len`` defaults to ``max_context`` and becomes the new
        ``max_context`` while enabled; ``cuda_graphs`` defaults to "on when on CUDA";
        ``fuse`` (fused q/k/v and gate/up weights, in place, no extra memory) defaults to
        "on when on CUDA and the weights are plain linear layers", and to on with
        ``compile``; ``prefill_buckets`` defaults to ``(16, 32, 64)`` with graphs (a
        question after a cached prefix replays a graph) and ``()`` without;
        ``compile_mode`` defaults to torch.compile's own default (on an H200 it compiles the
        7B steps in ~9 s; ``"max-autotune-no-cudagraphs"`` autotunes every GEMM for ~130 s and
        decodes no faster, benchmarks/fast_engine.md); ``buckets`` default with ``compile``
        to the powers of two up to ``max_score_tokens`` and the ``score_sizes`` a run will
        score (e.g. ``(γ + 1,)``; one compile each);
        ``compile_prefill`` (with ``compile``) compiles prefills too, for any length;
        ``kernels="triton"`` runs decode and score steps as four row-invariant Triton kernels
        (``evspec.models.fast.triton_layer``; opt-in, implies ``fuse``).
        Graphs are captured lazily, at the first step of each shape (see
        ``self.fast.stats['capture_ms']``).  Clears the prefix cache (its KV format changes).
        Refuses 4-bit (bitsandbytes) models: the fast engine runs on 16-bit weight matrices.

        ``exact`` (the numerics contract, ``FastConfig.exact``): a position's logits are bitwise
        the same whichever step computed them, so greedy speculative output equals target-only
        output in any dtype.  With the row-invariant Triton kernels (``kernels="triton"`` on
        CUDA) steps keep their sizes; otherwise every step is padded to one row bucket of
        ``max_score_tokens`` rows (``buckets`` default to that).  ``None`` (default): exact
        unless ``buckets`` of several sizes are given without those kernels (then not exact;
        ``self.fast.exact`` says which); ``True``: raise when the options cannot keep it;
        ``False``: steps padded only to their own bucket (cheaper one-token steps off the Triton
        path).
        """
        if is_4bit(self.decoder) or is_4bit(self.lm_head):
            raise ValueError(
                f"{type(self).__name__} has 4-bit (bitsandbytes) weights; the fast engine "
                "(--fast / enable_fast) needs 16-bit weights: load with quant='none' "
                "(--quant none) for --fast, or run the 4-bit model on the default dynamic path"
            )
        if self._fast is not None:
            self.disable_fast()
        base = self.max_context
        if max_len is None:
            max_len = base
        if max_len > base:
            raise ValueError(
                f"enable_fast(max_len={max_len}) exceeds the model's context of {base}"
            )
        on_cuda = self.device.type == "cuda"
        if cuda_graphs is None:
            cuda_graphs = on_cuda
        if fuse is None:
            fuse = compile or kernels == "triton" or (on_cuda and can_fuse(self.decoder) is None)
        if prefill_buckets is None:
            prefill_buckets = (16, 32, 64) if cuda_graphs else ()
        exact = self._resolve_exact(exact, kernels, max_score_tokens, buckets)
        if exact and buckets is None and not self._row_invariant_kernels(kernels):
            buckets = (max_score_tokens,)  # one row bucket: every step has the same shapes
        if compile and buckets is None:  # each bucket is one compile: powers of two, not every size
            buckets = compile_buckets(max_score_tokens, score_sizes)
        config = FastConfig(
            max_len=int(max_len),
            cuda_graphs=bool(cuda_graphs),
            compile=compile,
            compile_mode=compile_mode,
            max_score_tokens=max_score_tokens,
            buckets=buckets,
            kv_granularity=kv_granularity,
            max_slots=max_slots,
            attention=attention,
            fuse=bool(fuse),
            compile_backend=compile_backend,
            compile_prefill=compile_prefill,
            prefill_buckets=tuple(prefill_buckets),
            kernels=kernels,
            exact=exact,
        )
        self._fast = FastRuntime(self.decoder, self.lm_head, config)
        self._dynamic_max_context, self.max_context = base, int(max_len)
        if self._prefix_cache is not None:
            self._prefix_cache.clear()
        return self._fast

    def _row_invariant_kernels(self, kernels: str) -> bool:
        """Whether ``kernels`` would make every step row-invariant here (see
        ``FastLlama.row_invariant_steps``): the Triton kernels where Triton runs, a bias-free
        head, a head layout split-KV attention takes."""
        from evspec.models.fast import triton_layer
        from evspec.models.fast.decode_attention import exact_fits
        from evspec.models.fast.triton_support import available

        cfg = self.decoder.config
        heads, kv_heads = int(cfg.num_attention_heads), int(cfg.num_key_value_heads)
        head_dim = int(getattr(cfg, "head_dim", None) or cfg.hidden_size // heads)
        head = self.lm_head
        return (kernels == "triton" and available(self.device) and isinstance(head, nn.Linear)
                and head.bias is None and exact_fits(heads, kv_heads, head_dim)
                and triton_layer.STEP_ROWS >= 16)

    def _resolve_exact(self, exact: bool | None, kernels: str, max_score_tokens: int,
                       buckets: tuple[int, ...] | None) -> bool:
        """``enable_fast``'s ``exact``: None -> whether the options allow it; True -> raise if
        not."""
        from evspec.models.fast.decode_attention import EXACT_QUERIES

        why = None
        if max_score_tokens > EXACT_QUERIES:
            why = f"max_score_tokens {max_score_tokens} > {EXACT_QUERIES}"
        elif buckets is not None and len(buckets) > 1 and not self._row_invariant_kernels(kernels):
            why = (f"buckets {tuple(buckets)} of several sizes without the row-invariant Triton "
                   f"kernels (pass buckets=({max_score_tokens},), or kernels='triton' on CUDA)")
        if why is not None and exact:
            raise ValueError(f"enable_fast(exact=True) cannot keep the numerics contract: {why}")
        return why is None if exact is None else bool(exact)

    def disable_fast(self) -> None:
        """Back to the default dynamic-cache path (frees the static caches and graphs)."""
        if self._fast is None:
            return
        self._fast = None
        if self._dynamic_max_context is not None:
            self.max_context, self._dynamic_max_context = self._dynamic_max_context, None
        if self._prefix_cache is not None:
            self._prefix_cache.clear()

    @property
    def numerics(self) -> dict[str, object]:
        """What decides this model's logits: ``dtype``, ``engine`` (``fast`` or ``plain``, the
        transformers modules over a dynamic cache) and ``exact``: whether a position's logits
        are bitwise the same whichever step computes them (the fast engine's contract,
        ``enable_fast(exact=...)``), so that greedy speculative output equals target-only
        output in this dtype.  The plain engine makes no such promise: a one-token step and a
        score of several tokens run matrix products of different shapes, which round
        differently in bf16/fp16 (and, rarely, in float32)."""
        fast = self._fast
        return {"dtype": str(self.dtype).removeprefix("torch."),
                "engine": "plain" if fast is None else "fast",
                "exact": bool(fast is not None and fast.exact)}

    @property
    def fast(self) -> FastRuntime | None:
        """The fast runtime when enabled (its ``stats``: slots, graphs, capture ms)."""
        return self._fast

    def release(self, state: TargetState) -> None:
        """Hand a fast-path state's static cache back now (otherwise it is free once the
        state is garbage-collected).  No-op on the dynamic path."""
        if self._fast is not None and isinstance(state.cache, StaticKVCache):
            self._fast.release(state.cache)

    # -- core passes -------------------------------------------------------------------
    @torch.inference_mode()
    def _run(
        self,
        cache: DynamicCache,
        *,
        input_ids: torch.Tensor | None = None,  # [T]
        inputs_embeds: torch.Tensor | None = None,  # [T, H]
        last_only: bool = False,
        return_hidden: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """One decoder pass appending to ``cache``; returns float32 logits ``[T', V]``
        (T' = 1 when ``last_only``) and the matching last hidden states ``[T', H]``."""
        out = self.decoder(
            input_ids=None if input_ids is None else input_ids[None].to(self.device),
            inputs_embeds=None if inputs_embeds is None else inputs_embeds[None],
            past_key_values=cache,
            use_cache=True,
        )
        hidden = out.last_hidden_state[0]  # [T, H]
        if last_only:
            hidden = hidden[-1:]
        logits = self.lm_head(hidden).float()  # [T', V]
        return logits, (hidden if return_hidden else None)

    def _check_prompt_fits(self, length: int) -> None:
        if length >= self.max_context:
            raise ValueError(
                f"prompt of {length} tokens does not fit the model's context of "
                f"{self.max_context}; shorten the question or use fewer frames/images"
            )

    @torch.inference_mode()
    def _head(self, hidden: torch.Tensor) -> torch.Tensor:
        """``[T, H]`` -> float32 logits ``[T, V]``."""
        return self.lm_head(hidden).float()

    def _prefill_embeds(
        self,
        inputs_embeds: torch.Tensor,  # [L, H]
        prompt_ids: torch.Tensor,  # [L] (placeholders expanded)
        *,
        return_hidden: bool,
        timings: dict[str, float],
    ) -> TargetState:
        length = int(inputs_embeds.shape[0])
        self._check_prompt_fits(length)
        if self._fast is not None:
            cache = self._fast.acquire()
            try:
                with timed(self.device, timings, "prefill_ms"):
                    last = self._fast.prefill(cache, inputs_embeds)[-1:]  # [1, H]
                    logits = self._head(last)  # [1, V]
                state = TargetState(
                    cache=cache,
                    length=length,
                    last_logits=logits[0],
                    prompt_ids=prompt_ids.cpu(),
                    last_hidden=last[0] if return_hidden else None,
                    timings=timings,
                )
            except BaseException:
                self._fast.release(cache)
                raise
            self._fast.bind(cache, state)
            return state
        cache = DynamicCache()
        with timed(self.device, timings, "prefill_ms"):
            logits, hidden = self._run(
                cache, inputs_embeds=inputs_embeds, last_only=True, return_hidden=return_hidden
            )
        return TargetState(
            cache=cache,
            length=length,
            last_logits=logits[0],
            prompt_ids=prompt_ids.cpu(),
            last_hidden=None if hidden is None else hidden[0],
            timings=timings,
        )

    # -- the Target protocol -----------------------------------------------------------
    def score(
        self, state: TargetState, tokens: torch.Tensor, *, return_hidden: bool = False
    ) -> ScoreOutput:
        """Feed ``tokens`` ``[k + 1]`` (pending token + k drafts) in one pass."""
        k1 = int(tokens.numel())
        if k1 < 1:
            raise ValueError("score needs at least the pending token")
        if state.length + k1 > self.max_context:
            raise ValueError(
                f"context full: {state.length} + {k1} tokens exceed {self.max_context}"
            )
        if isinstance(state.cache, StaticKVCache):
            fast = self._check_static(state)
            logits, hidden = fast.step(
                state.cache, tokens.reshape(-1).long(), return_hidden=return_hidden
            )
        else:
            logits, hidden = self._run(
                state.cache, input_ids=tokens.reshape(-1).long(), return_hidden=return_hidden
            )
        state.length += k1
        return ScoreOutput(logits=logits, hidden=hidden)

    def can_chain(self, state: TargetState) -> bool:
        """Whether :meth:`greedy_chain` can continue ``state`` (a fast-path state)."""
        return self._fast is not None and isinstance(state.cache, StaticKVCache)

    def greedy_chain(self, state: TargetState, steps: int, first: int | None = None) -> torch.Tensor:
        """Greedy decoding with the tokens kept on the device (fast path only): feed
        ``first`` (None: continue the previous chain of this state), then each step's
        argmax, ``steps`` times.  Returns the ``steps`` chosen ids ``[steps]`` on the device,
        not synchronised; ``state.length += steps`` (the last id is not fed)."""
        if not self.can_chain(state):
            raise RuntimeError("greedy_chain needs a state prefilled on the fast path (enable_fast)")
        fast = self._check_static(state)
        if state.length + steps > self.max_context:
            raise ValueError(f"context full: {state.length} + {steps} tokens exceed {self.max_context}")
        ids = fast.chain(state.cache, steps, None if first is None else torch.tensor([int(first)]))
        state.length += steps
        return ids

    def rollback(self, state: TargetState, n: int) -> None:
        """Drop the last ``n`` positions (O(1) on the static cache: a pointer move)."""
        if isinstance(state.cache, StaticKVCache):
            self._check_static(state)
        kv.rollback(state.cache, n)
        state.length -= n

    def _check_static(self, state: TargetState) -> FastRuntime:
        """The fast runtime, after checking that ``state`` still owns its static cache."""
        if self._fast is None:
            raise RuntimeError("this state was prefilled on the fast path, which has been disabled since")
        if not self._fast.owned_by(state.cache, state) or state.cache.length != state.length:
            raise RuntimeError(
                "this state's static cache was handed to a newer request (after release(), "
                "or enable_fast was called again); prefill again"
            )
        return self._fast

    def decode_text(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)
