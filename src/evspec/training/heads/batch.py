"""Padded training batches from collected examples (``adapters.store``).

Positions follow the store: ``j`` = the state that predicts ``x_j``; ``T`` = the longest
answer in the batch; ``mask[b, j]`` marks real positions.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch

from evspec.training.heads.store import CollectedData, Example


@dataclass
class Batch:
    """``B`` examples padded to ``T`` answer positions."""

    tokens: torch.Tensor  # [B, T] int64 answer ids x_j (0 where padded)
    mask: torch.Tensor  # [B, T] bool
    target_hidden: torch.Tensor  # [B, T, H_t] float32
    topk_ids: torch.Tensor  # [B, T, K] int64
    topk_logp: torch.Tensor  # [B, T, K] float32
    draft_hidden: torch.Tensor  # [B, T, H_d] float32
    draft_top1: torch.Tensor  # [B, T] int64
    memory: torch.Tensor | None = None  # [B, M, H_d]
    memory_mask: torch.Tensor | None = None  # [B, M] bool
    video: torch.Tensor | None = None  # [B, N, H_t]
    video_mask: torch.Tensor | None = None  # [B, N] bool
    examples: list[Example] | None = None  # the sources (LoRA rebuilds EventGPT inputs)

    @property
    def size(self) -> int:
        return int(self.tokens.shape[0])

    @property
    def qtypes(self) -> list[str | None]:
        return [e.qtype for e in self.examples or []]


def _pad(seqs: list[torch.Tensor], fill: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """``[n_i, ...]`` tensors -> ``[B, max n, ...]`` and a bool mask ``[B, max n]``."""
    n = max(int(s.shape[0]) for s in seqs)
    out = seqs[0].new_full((len(seqs), n, *seqs[0].shape[1:]), fill)
    mask = torch.zeros(len(seqs), n, dtype=torch.bool)
    for i, s in enumerate(seqs):
        out[i, : s.shape[0]] = s
        mask[i, : s.shape[0]] = True
    return out, mask


def collate(
    examples: list[Example],
    device: torch.device | str = "cpu",
    *,
    memory: str = "none",
    video: bool = False,
) -> Batch:
    """Pad ``examples`` into a :class:`Batch` on ``device``; ``memory`` = ``"events"`` /
    ``"prefill"`` / ``"none"`` selects the event memory, ``video`` the target's features."""
    if not examples:
        raise ValueError("collate needs at least one example")
    f32 = torch.float32
    tokens, mask = _pad([e.answer_ids for e in examples])
    batch = Batch(
        tokens=tokens,
        mask=mask,
        target_hidden=_pad([e.target_hidden.to(f32) for e in examples])[0],
        topk_ids=_pad([e.topk_ids for e in examples])[0],
        topk_logp=_pad([e.topk_logp.to(f32) for e in examples], fill=-1e4)[0],
        draft_hidden=_pad([e.draft_hidden.to(f32) for e in examples])[0],
        draft_top1=_pad([e.draft_top1 for e in examples])[0],
        examples=examples,
    )
    if memory == "events":
        batch.memory, batch.memory_mask = _pad([e.event_embeds.to(f32) for e in examples])
    elif memory == "prefill":
        if any(e.prefill_hidden is None for e in examples):
            raise ValueError(
                "this module reads EventGPT's prompt states (memory 'prefill') but the data has "
                "none; collect with --memory prefill"
            )
        batch.memory, batch.memory_mask = _pad([e.prefill_hidden.to(f32) for e in examples])  # type: ignore[union-attr]
    elif memory != "none":
        raise ValueError(f"unknown memory {memory!r}; use none, events or prefill")
    if video:
        if any(e.video_features is None for e in examples):
            raise ValueError(
                "this module reads the target's video features but the data has none; collect "
                "with --video-features"
            )
        batch.video, batch.video_mask = _pad([e.video_features.to(f32) for e in examples])  # type: ignore[union-attr]
    for name in ("tokens", "mask", "target_hidden", "topk_ids", "topk_logp", "draft_hidden",
                 "draft_top1", "memory", "memory_mask", "video", "video_mask"):
        value = getattr(batch, name)
        if value is not None:
            setattr(batch, name, value.to(device, non_blocking=True))
    return batch


def batches(
    data: CollectedData,
    split: str,
    batch_size: int,
    *,
    device: torch.device | str = "cpu",
    memory: str = "none",
    video: bool = False,
    shuffle: bool = False,
    seed: int = 0,
    limit: int | None = None,
) -> Iterator[Batch]:
    """One pass over ``split`` in batches of ``batch_size`` (the last one may be smaller)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    buf: list[Example] = []
    for ex in data.examples(split, shuffle=shuffle, seed=seed, limit=limit):
        buf.append(ex)
        if len(buf) == batch_size:
            yield collate(buf, device, memory=memory, video=video)
            buf = []
    if buf:
        yield collate(buf, device, memory=memory, video=video)
