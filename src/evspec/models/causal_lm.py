"""Shared decoding mechanics over a transformers decoder: prefill from embeddings, score
k tokens in one pass, roll back the KV cache.

Both wrappers (Video-LLaVA target, EventGPT drafter) subclass :class:`CausalLMWrapper`
and only say how the multimodal prompt embedding is built.  They therefore satisfy the
``Target`` protocol of ``evspec.decoding.protocols`` alike, so either model can verify or
draft (drafter == target is a test case).
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn
from transformers import DynamicCache

from evspec.models import kv
from evspec.models.state import ScoreOutput, TargetState


@contextmanager
def timed(device: torch.device, out: dict[str, float], key: str) -> Iterator[None]:
    """Wall-clock milliseconds of the block into ``out[key]``, synchronising CUDA."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    yield
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    out[key] = out.get(key, 0.0) + (time.perf_counter() - t0) * 1e3


class CausalLMWrapper:
    """Subclasses set ``self.decoder`` (a transformers base decoder such as ``LlamaModel``
    returning ``last_hidden_state``), ``self.lm_head``, ``self.tokenizer``,
    ``self.eos_token_id``, ``self.max_context`` and ``self.vocab_size``."""

    decoder: nn.Module
    lm_head: nn.Module
    eos_token_id: int
    max_context: int
    vocab_size: int

    @property
    def device(self) -> torch.device:
        return self.lm_head.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.lm_head.weight.dtype

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

    def _prefill_embeds(
        self,
        inputs_embeds: torch.Tensor,  # [L, H]
        prompt_ids: torch.Tensor,  # [L] (placeholders expanded)
        *,
        return_hidden: bool,
        timings: dict[str, float],
    ) -> TargetState:
        length = int(inputs_embeds.shape[0])
        if length >= self.max_context:
            raise ValueError(
                f"prompt of {length} tokens does not fit the model's context of "
                f"{self.max_context}; shorten the question or use fewer frames/images"
            )
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
        logits, hidden = self._run(
            state.cache, input_ids=tokens.reshape(-1).long(), return_hidden=return_hidden
        )
        state.length += k1
        return ScoreOutput(logits=logits, hidden=hidden)

    def rollback(self, state: TargetState, n: int) -> None:
        kv.rollback(state.cache, n)
        state.length -= n

    def decode_text(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)
