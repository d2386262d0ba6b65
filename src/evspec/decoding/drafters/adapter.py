"""``eventgpt-adapter``: EventGPT drafts, but its next-token logits come from a trained
adapter that maps EventGPT's hidden state into the target's space, read out by the
target's own ``lm_head`` (research note §3.1/§3.2; adapters in ``evspec.modules``).

Built by composition: :class:`AdaptedEventGPT` wraps EventGPT behind the ``Target``
calls (prefill / score / rollback) and replaces the logits; :class:`ModelDrafter` does the
drafting and re-synchronisation unchanged.  The adapter's per-request inputs (the answer
states so far, and for the aligner the target's video features) live in
``TargetState.extra`` and are rolled back with the KV cache.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from evspec.decoding.drafters.base import DrafterError
from evspec.decoding.drafters.model import ModelDrafter
from evspec.decoding.protocols import Target
from evspec.models.request import Request
from evspec.models.state import ScoreOutput, TargetState

_HISTORY, _CONTEXT = "adapter_history", "adapter_context"


class AdaptedEventGPT:
    """EventGPT whose logits are ``lm_head(adapter(g))[slot 0]`` over the target's vocabulary.

    ``adapter``: an :class:`~evspec.modules.adapter_base.HiddenAdapter`; ``lm_head``: the
    target's (frozen).  ``vocab_size`` is the target's logits width; ``tokenizer`` stays
    EventGPT's (the drafter feeds EventGPT ids, within the shared vocabulary).
    """

    def __init__(self, model: Any, adapter: torch.nn.Module, lm_head: torch.nn.Module) -> None:
        self.model, self.adapter, self.head = model, adapter, lm_head
        self.tokenizer = model.tokenizer
        self.eos_token_id = model.eos_token_id
        self.max_context = model.max_context
        self.vocab_size = int(lm_head.weight.shape[0])
        self.n_event_images = getattr(model, "n_event_images", None)
        self.next_context: torch.Tensor | None = None  # [N, H_t], set before prefill

    @property
    def device(self) -> torch.device:
        return self.model.device

    @torch.inference_mode()
    def _logits(self, state: TargetState, n_new: int) -> torch.Tensor:
        """Logits ``[n_new, V_t]`` of the last ``n_new`` answer states."""
        hist = state.extra[_HISTORY]  # [c, H_d]
        p = next(self.adapter.parameters())
        g = hist if getattr(self.adapter, "uses_history", False) else hist[-n_new:]
        ctx = state.extra.get(_CONTEXT)
        out = self.adapter(g[None].to(p.device, p.dtype), None if ctx is None else ctx[None].to(p.device, p.dtype))
        feats = out[0, -n_new:, 0]  # [n_new, H_t], slot 0
        w = self.head.weight
        return self.head(feats.to(w.device, w.dtype)).float()

    def prefill(self, request: Request, *, return_hidden: bool = False) -> TargetState:
        state = self.model.prefill(request, return_hidden=True)
        state.extra[_HISTORY] = state.last_hidden[None]  # [1, H_d]: g_0
        if self.next_context is not None:
            state.extra[_CONTEXT] = self.next_context
        state.last_logits = self._logits(state, 1)[0]
        return state

    def score(self, state: TargetState, tokens: torch.Tensor, *, return_hidden: bool = False) -> ScoreOutput:
        out = self.model.score(state, tokens, return_hidden=True)
        state.extra[_HISTORY] = torch.cat([state.extra[_HISTORY], out.hidden], dim=0)
        n = int(out.hidden.shape[0])
        return ScoreOutput(logits=self._logits(state, n), hidden=out.hidden if return_hidden else None)

    def rollback(self, state: TargetState, n: int) -> None:
        self.model.rollback(state, n)
        if n:
            state.extra[_HISTORY] = state.extra[_HISTORY][:-n]

    def decode_text(self, ids: list[int]) -> str:
        return self.model.decode_text(ids)


def video_features_of(target: Any, state: TargetState, request: Request) -> torch.Tensor:
    """The target's projected video features ``[T * P, H_t]`` for ``request``: reused from
    the prefill when it kept them (prefix cache), else computed once."""
    feats = state.extra.get("video_features")
    if feats is not None:
        return feats
    if not hasattr(target, "video_features"):
        raise DrafterError("the aligner adapter needs a Video-LLaVA target (video features)")
    with torch.inference_mode():
        return target.video_features(target.preprocess_video(request.video))


class AdapterDrafter(ModelDrafter):
    """:class:`ModelDrafter` over :class:`AdaptedEventGPT`; supplies the aligner's context."""

    def __init__(self, adapted: AdaptedEventGPT, *, name: str = "eventgpt-adapter", top_p: float = 1.0) -> None:
        super().__init__(adapted, name=name, top_p=top_p)
        self.adapted = adapted

    def begin(self, request: Request, target: Target, state: TargetState, first_token: int) -> None:
        self.adapted.next_context = None
        if getattr(self.adapted.adapter, "needs_context", False):
            self.adapted.next_context = video_features_of(target, state, request)
        super().begin(request, target, state, first_token)


def make_adapter_drafter(
    target: Any, draft_model: Any, adapter_path: str | Path, *, name: str = "eventgpt-adapter", top_p: float = 1.0
) -> AdapterDrafter:
    """Load a trained adapter checkpoint (``evspec train --module note-adapter|bottleneck|
    attention|aligner``) and wrap ``draft_model`` with it."""
    from evspec.modules.checkpoint import ADAPTER_KINDS, load_checkpoint

    ckpt = load_checkpoint(adapter_path)
    if ckpt.kind not in ADAPTER_KINDS:
        raise DrafterError(f"{adapter_path}: a {ckpt.kind} checkpoint, not an adapter ({', '.join(ADAPTER_KINDS)})")
    try:
        ckpt.check_target(target.lm_head.weight)
    except ValueError as exc:
        raise DrafterError(str(exc)) from exc
    width = int(draft_model.lm_head.weight.shape[1])
    if ckpt.config.get("draft_size") != width:
        raise DrafterError(f"{adapter_path}: adapter expects EventGPT width {ckpt.config.get('draft_size')}, "
                           f"the draft model has {width}")
    adapter = ckpt.build(device=draft_model.device, dtype=torch.float32)
    return AdapterDrafter(AdaptedEventGPT(draft_model, adapter, target.lm_head), name=name, top_p=top_p)
