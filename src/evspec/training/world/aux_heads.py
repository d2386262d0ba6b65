"""Training-only auxiliary heads: dense per-patch supervision of the world models.

Two linear read-outs, dropped after training (the shipped checkpoints are the plain
Video-LLaVA / EventGPT architectures):

* ``tower``: on the vision features the decoder receives (after the projector, and for
  the drafter the adaptor), one row per image patch ``[B, K, P, H]``: what object covers
  the patch (shape, with a background class), where its centre is (regressed, so the
  features carry absolute position) and -- target -- its colour, or -- drafter, whose
  event images show motion -- its direction and speed class.
* ``llm`` (target only): on the decoder's last hidden states at the video positions of
  frames 1..K-1: the covering object's direction and speed class.  A frame's token can
  only know the motion by attending to the same object in earlier frames, so this teaches
  the decoder the cross-frame comparison that direction, speed, "what moves" and
  "describe" questions need.

Losses are means over the labelled patches (cross-entropy; mean squared error for the
centre) summed with equal weights; :meth:`AuxHeads.loss` returns the total and its parts
(tensors, no device sync).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from evspec.training.world.aux_labels import (
    IGNORE, MOTION_CLASSES, N_COLOUR, N_SHAPE, SPEED_CLASSES,
)

LabelTensors = dict[str, torch.Tensor]  # name -> [B, K, P] (centre [B, K, P, 2])

_N_MOTION, _N_SPEED = len(MOTION_CLASSES), len(SPEED_CLASSES)


def _ce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over labelled rows (0 when none): ``[..., C]``, ``[...]``."""
    flat = labels.reshape(-1)
    total = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), flat,
                            ignore_index=IGNORE, reduction="sum")
    return total / (flat != IGNORE).sum().clamp(min=1)


def _mse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error over rows whose target is not NaN: ``[..., 2]`` both."""
    ok = ~torch.isnan(target[..., 0])  # [...]
    diff = (pred.float() - torch.nan_to_num(target)) ** 2  # [..., 2]
    return (diff.sum(-1) * ok).sum() / ok.sum().clamp(min=1)


class AuxHeads(nn.Module):
    """Read-outs for ``role`` (``target`` or ``drafter``) over features of width ``width``."""

    def __init__(self, role: str, width: int) -> None:
        super().__init__()
        if role not in ("target", "drafter"):
            raise ValueError(f"AuxHeads: role = {role!r}; use 'target' or 'drafter'")
        self.role = role
        extra = N_COLOUR if role == "target" else _N_MOTION + _N_SPEED
        self.tower = nn.Linear(width, N_SHAPE + 2 + extra)
        self.llm = nn.Linear(width, _N_MOTION + _N_SPEED) if role == "target" else None

    def loss(
        self, tower: torch.Tensor, labels: LabelTensors, video_hidden: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``tower`` ``[B, K, P, H]`` patch features (CLS dropped); ``video_hidden``
        ``[B, K, P, H]`` the decoder's last hidden states at the same patches (target)."""
        out = self.tower(tower)  # [B, K, P, C]
        parts = {
            "shape": _ce(out[..., :N_SHAPE], labels["shape"]),
            "centre": _mse(out[..., N_SHAPE : N_SHAPE + 2], labels["centre"]),
        }
        rest = out[..., N_SHAPE + 2 :]
        if self.role == "target":
            parts["colour"] = _ce(rest, labels["colour"])
        else:
            parts["motion"] = _ce(rest[..., :_N_MOTION], labels["motion"])
            parts["speed"] = _ce(rest[..., _N_MOTION:], labels["speed"])
        if self.llm is not None:
            if video_hidden is None:
                raise ValueError("AuxHeads(target).loss needs the decoder's video hidden states")
            late = self.llm(video_hidden[:, 1:])  # frames 1..K-1: [B, K-1, P, 12]
            parts["llm_motion"] = _ce(late[..., :_N_MOTION], labels["motion"][:, 1:])
            parts["llm_speed"] = _ce(late[..., _N_MOTION:], labels["speed"][:, 1:])
        total = torch.stack(list(parts.values())).sum()
        return total, parts
