"""The one input type both models and every drafter see."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Request:
    """One question about one clip.

    ``video``: sampled RGB frames ``[T, H, W, 3]`` uint8 (Video-LLaVA samples T = 8).
    ``event_images``: EventGPT's rendered event images ``[n, H, W, 3]`` uint8 (n = 5 officially).
    ``clip_id`` keys the per-clip prefix cache; ``qtype`` is the question type when known
    (used by routers and per-type reports).
    """

    question: str
    video: np.ndarray | None = None
    event_images: np.ndarray | None = None
    clip_id: str | None = None
    qtype: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.question, str) or not self.question.strip():
            raise ValueError("Request.question must be a non-empty string")
        for name in ("video", "event_images"):
            arr = getattr(self, name)
            if arr is None:
                continue
            if not isinstance(arr, np.ndarray) or arr.ndim != 4 or arr.shape[-1] != 3:
                raise ValueError(
                    f"Request.{name} must be a uint8 array [N, H, W, 3]; got "
                    f"{getattr(arr, 'shape', type(arr).__name__)}"
                )
            if arr.dtype != np.uint8:
                raise ValueError(f"Request.{name} must be uint8, got {arr.dtype}")
            if arr.shape[0] < 1:
                raise ValueError(f"Request.{name} has no images")
