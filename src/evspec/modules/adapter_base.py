"""What every hidden-state adapter is: EventGPT's last hidden state at answer position
``j`` (``g_j``, the state that predicts token ``x_j``) -> ``E`` features in the target's
hidden space, which the target's frozen ``lm_head`` turns into next-token logits.

Slot 0 predicts ``x_j`` (the drafter's own next token, now in the target's vocabulary and
phrasing); slot ``e`` > 0 (the note's token expander) predicts ``x_{j+e}``.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn


class HiddenAdapter(nn.Module):
    """Base class.  Subclasses set ``kind`` and implement :meth:`forward`.

    ``needs_context``: the adapter reads the target's video features (the aligner);
    ``uses_history``: slot outputs at ``j`` depend on ``g_0..g_j`` (causal attention), so
    incremental callers pass the whole answer history, not only the new positions.
    """

    kind: ClassVar[str] = ""
    needs_context: ClassVar[bool] = False
    uses_history: ClassVar[bool] = False
    slots: int = 1

    def forward(
        self,
        draft_hidden: torch.Tensor,  # [B, T, H_d]
        context: torch.Tensor | None = None,  # [B, N, H_t] target video features
        context_mask: torch.Tensor | None = None,  # [B, N] bool
    ) -> torch.Tensor:  # [B, T, slots, H_t]
        raise NotImplementedError


def input_projection(draft_size: int, target_size: int) -> nn.Module:
    """Identity when both models are equally wide (both 7B LLaMAs: start from "use
    EventGPT's state as is"), else a learned linear map."""
    if draft_size == target_size:
        return nn.Identity()
    return nn.Linear(draft_size, target_size, bias=True)


def check_sizes(owner: str, **sizes: int) -> None:
    """Raise naming the field when a width is not a positive integer."""
    for name, value in sizes.items():
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{owner}.{name} must be a positive integer, got {value!r}")


def zero_(module: nn.Linear) -> None:
    """Zero a residual branch's output projection, so the branch starts as a no-op."""
    nn.init.zeros_(module.weight)
    if module.bias is not None:
        nn.init.zeros_(module.bias)
