"""Batches: a deterministic order, right-padding, answer-only labels, pixel normalisation.

The batch of step s is a pure function of ``(seed, s)`` (epoch e = s // steps_per_epoch
uses the permutation seeded with ``(seed, e)``), so a resumed run sees exactly the batches
an uninterrupted run would.

Layout of one training sequence (the drafter's prompt holds one event placeholder that the
forward replaces by E = n + P event embeddings, so its *expanded* prompt is
``len(prompt) - 1 + E`` long; the target's prompt already has its video ids expanded)::

    inputs:  prompt ............ a_0 a_1 ... a_{m-2}      (the last answer id, EOS, is never fed)
    labels:  -100 ... -100  a_0  a_1 ... a_{m-2} a_{m-1}  (label at position t = token t + 1)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from evspec.models.eventgpt import EVENT_TOKEN_INDEX
from evspec.training.world.dataset import Example

IGNORE = -100  # cross-entropy ignore index


def batch_indices(n: int, batch_size: int, seed: int, step: int) -> np.ndarray:
    """Example indices ``[batch_size]`` of training step ``step`` (0-based)."""
    if n < 1:
        raise ValueError("batch_indices: no training examples")
    if n < batch_size:  # tiny data: sample with replacement, still a function of the step
        return np.random.default_rng([seed, 1, step]).integers(0, n, batch_size)
    per_epoch = n // batch_size
    epoch, offset = divmod(step, per_epoch)
    perm = np.random.default_rng([seed, 0, epoch]).permutation(n)
    return perm[offset * batch_size : (offset + 1) * batch_size]


@dataclass
class Batch:
    """``input_ids`` ``[B, L]`` (pad id after each sequence), ``attention_mask`` ``[B, L]``
    on the unexpanded ids; ``labels`` ``[B, L']`` in the expanded layout (L' = L + E - 1 for
    the drafter, L for the target); ``prompt_lengths`` ``[B]`` expanded prompt lengths;
    ``clips`` ``[B]`` rows of the pixel array; ``placeholders`` ``[B]`` the index of the
    event placeholder (-200) in each prompt, -1 when there is none.  ``prompt_lengths``,
    ``clips`` and ``placeholders`` stay on the CPU (no device sync to read them)."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor | None
    prompt_lengths: torch.Tensor
    clips: torch.Tensor
    placeholders: torch.Tensor
    examples: list[Example]


def collate(
    examples: Sequence[Example],
    *,
    pad_id: int,
    expand: int,
    with_answer: bool = True,
    device: torch.device | str = "cpu",
) -> Batch:
    """Right-pad ``examples`` into one batch.

    ``expand``: positions the forward adds per sequence (E - 1 for the drafter, 0 for the
    target).  ``with_answer=False`` gives prompts only (for greedy decoding).
    """
    if not examples:
        raise ValueError("collate: empty batch")
    seqs = [ex.prompt + (ex.answer[:-1] if with_answer else ()) for ex in examples]
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)  # [B, L]
    mask = torch.zeros((len(seqs), width), dtype=torch.long)  # [B, L]
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
        mask[i, : len(s)] = 1
    prompt_len = torch.tensor([len(ex.prompt) + expand for ex in examples])  # [B]
    marks = [[i for i, t in enumerate(ex.prompt) if t == EVENT_TOKEN_INDEX] for ex in examples]
    if any(len(m) > 1 for m in marks):
        raise ValueError("collate: a prompt holds more than one event placeholder")
    placeholders = torch.tensor([m[0] if m else -1 for m in marks])  # [B]
    labels = None
    if with_answer:
        labels = torch.full((len(seqs), width + expand), IGNORE, dtype=torch.long)  # [B, L']
        for i, ex in enumerate(examples):
            start = int(prompt_len[i]) - 1  # the last prompt position predicts a_0
            labels[i, start : start + len(ex.answer)] = torch.tensor(ex.answer, dtype=torch.long)
        labels = labels.to(device, non_blocking=True)
    return Batch(
        input_ids=ids.to(device, non_blocking=True),
        attention_mask=mask.to(device, non_blocking=True),
        labels=labels,
        prompt_lengths=prompt_len,
        clips=torch.tensor([ex.clip for ex in examples], dtype=torch.long),
        placeholders=placeholders,
        examples=list(examples),
    )


class PixelNormalizer:
    """uint8 ``[B, K, S, S, 3]`` -> CLIP-normalised float ``[B, K, 3, S, S]``:
    ``(x / 255 - mean) / std`` in float32, as the CLIP image processors compute it."""

    def __init__(self, mean: Sequence[float], std: Sequence[float], device: torch.device) -> None:
        self.mean = torch.tensor(list(mean), dtype=torch.float32, device=device).view(1, 1, 3, 1, 1)
        self.std = torch.tensor(list(std), dtype=torch.float32, device=device).view(1, 1, 3, 1, 1)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        x = images.permute(0, 1, 4, 2, 3).float() * (1.0 / 255.0)  # [B, K, 3, S, S]
        return (x - self.mean) / self.std
