"""The one input type both models and every drafter see."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


#: event images: one ``[n, H, W, 3]`` uint8 array, or n ``[H_i, W_i, 3]`` arrays of differing
#: sizes (the EventGPT release's per-chunk canvases)
EventImages = np.ndarray | tuple[np.ndarray, ...]


def _check_images(name: str, arr: object) -> None:
    if not isinstance(arr, np.ndarray) or arr.ndim != 4 or arr.shape[-1] != 3:
        raise ValueError(
            f"Request.{name} must be a uint8 array [N, H, W, 3]; got "
            f"{getattr(arr, 'shape', type(arr).__name__)}"
        )
    if arr.dtype != np.uint8:
        raise ValueError(f"Request.{name} must be uint8, got {arr.dtype}")
    if arr.shape[0] < 1:
        raise ValueError(f"Request.{name} has no images")


def _as_event_images(images: object) -> EventImages:
    """A list/tuple of ``[H_i, W_i, 3]`` uint8 images -> one stacked array when they share a
    size, else a tuple; an array passes through."""
    if not isinstance(images, (list, tuple)):
        return images  # type: ignore[return-value]
    if not images:
        raise ValueError("Request.event_images has no images")
    for i, img in enumerate(images):
        if not isinstance(img, np.ndarray) or img.ndim != 3 or img.shape[-1] != 3:
            raise ValueError(
                f"Request.event_images[{i}] must be a uint8 image [H, W, 3]; got "
                f"{getattr(img, 'shape', type(img).__name__)}"
            )
        if img.dtype != np.uint8:
            raise ValueError(f"Request.event_images[{i}] must be uint8, got {img.dtype}")
    if len({img.shape for img in images}) == 1:
        return np.stack(images)  # [n, H, W, 3]
    return tuple(images)


@dataclass
class Request:
    """One question about one clip.

    ``video``: sampled RGB frames ``[T, H, W, 3]`` uint8 (Video-LLaVA samples T = 8).
    ``event_images``: EventGPT's rendered event images ``[n, H, W, 3]`` uint8 (n = 5
    officially), or n ``[H_i, W_i, 3]`` images of differing sizes (a list/tuple; stacked into
    one array when the sizes agree), as the release's per-chunk canvas paints them.
    ``clip_id`` keys the per-clip prefix cache; ``qtype`` is the question type when known
    (used by routers and per-type reports).
    """

    question: str
    video: np.ndarray | None = None
    event_images: EventImages | None = None
    clip_id: str | None = None
    qtype: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.question, str) or not self.question.strip():
            raise ValueError("Request.question must be a non-empty string")
        if self.video is not None:
            _check_images("video", self.video)
        if self.event_images is not None:
            self.event_images = _as_event_images(self.event_images)
            if not isinstance(self.event_images, tuple):
                _check_images("event_images", self.event_images)
