"""Per-request model state shared by the target and model-based drafters.

Lives in ``models`` (not ``decoding``) so that model wrappers never import upward.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class TargetState:
    """Everything the target keeps for one request.

    ``cache``: the model's KV cache (holds ``length`` positions).
    ``last_logits``: ``[V]`` float32 logits of the last prefilled position.
    ``last_hidden``: ``[H]`` last-layer hidden state of that position (when asked).
    ``prompt_ids``: ``[L]`` the full prompt (video placeholder expanded), on CPU.
    ``timings``: milliseconds spent in stages of prefill (``vision_ms``, ``prefill_ms``).
    """

    cache: Any
    length: int
    last_logits: torch.Tensor
    prompt_ids: torch.Tensor
    last_hidden: torch.Tensor | None = None
    timings: dict[str, float] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class ScoreOutput:
    """``logits``: ``[k + 1, V]`` float32; ``hidden``: ``[k + 1, H]`` or None."""

    logits: torch.Tensor
    hidden: torch.Tensor | None = None
