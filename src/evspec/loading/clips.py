"""Clip files -> requests, sized by the loaded models' configs (:class:`ClipSizes`)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from evspec.models.request import Request


def is_world_model(model) -> bool:
    """Whether ``model`` (an EventGPT wrapper) was trained on the synthetic world, as its
    config declares (``EventGPTConfig.world``, the ``evspec_world`` key of config.json)."""
    return bool(getattr(getattr(model, "config", None), "world", False))


@dataclass(frozen=True)
class ClipSizes:
    """How a clip must look to the loaded models: ``num_frames`` video frames of
    ``frame_size``² pixels for the target, ``n_event_images`` event images of
    ``event_size``² for the draft model; ``world``: the draft model was trained on the
    synthetic world (event images of the whole clip on the sensor-sized canvas)."""

    num_frames: int = 8
    frame_size: int = 224
    n_event_images: int = 5
    event_size: int = 336
    world: bool = False

    @classmethod
    def of(cls, target, draft=None) -> ClipSizes:
        """The sizes the configs of ``target`` (and ``draft``, when given) declare."""
        out = cls(num_frames=int(target.num_frames),
                  frame_size=int(target.config.vision_config.image_size))
        if draft is None:
            return out
        return replace(out, n_event_images=int(draft.n_event_images),
                       event_size=int(draft.config.image_size), world=is_world_model(draft))


@dataclass
class Inputs:
    """Raw model inputs of one clip: ``video`` ``[T, H, W, 3]``, ``event_images``
    ``[n, H, W, 3]``."""

    video: np.ndarray | None
    event_images: np.ndarray | tuple[np.ndarray, ...] | None  # a tuple when sizes differ


def random_images(n: int, size: int, seed: int) -> np.ndarray:
    """``[n, size, size, 3]`` uint8 noise (for presets with random weights)."""
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def load_inputs(
    video: str | None,
    events: str | None,
    sizes: ClipSizes,
    *,
    window_ms: float | None = None,
    seed: int = 0,
) -> Inputs:
    """Read a video (mp4 or frame folder) and an events file into model inputs of ``sizes``.

    ``"random"`` gives random images (useful with the random-weight presets).  Events may
    be a stream file (rendered as the EventGPT release does into ``sizes.n_event_images``
    images, each on a canvas sized from its own events; ``window_ms`` keeps only the first
    window of that length) or a folder of already rendered event images.  For a world
    drafter (``sizes.world``) the stream is rendered on its sensor-sized canvas over the
    whole clip, as the world models were trained, without the ~50 ms window warning.
    """
    vid = None
    if video == "random":
        vid = random_images(sizes.num_frames, sizes.frame_size, seed)
    elif video is not None:
        from evspec.data.video import read_video

        vid = read_video(video, num_frames=sizes.num_frames)

    ev = None
    if events == "random":
        ev = random_images(sizes.n_event_images, sizes.event_size, seed + 1)
    elif events is not None:
        path = Path(events)
        if path.is_dir():
            from evspec.data.video import read_video

            ev = read_video(path, num_frames=sizes.n_event_images)
        else:
            from evspec.data.clipio import load_events
            from evspec.data.render import render_canvas

            stream = load_events(path)
            if window_ms is not None:
                t0 = int(stream.t[0]) if len(stream) else 0
                stream = stream.window_time(t0, t0 + int(window_ms * 1000))
            canvas = "sensor" if sizes.world else "chunk"
            ev = render_canvas(stream, sizes.n_event_images, canvas, warn_window=not sizes.world)
    return Inputs(video=vid, event_images=ev)


def make_request(question: str, inputs: Inputs, *, clip_id: str | None = None,
                 qtype: str | None = None) -> Request:
    return Request(question=question, video=inputs.video, event_images=inputs.event_images,
                   clip_id=clip_id, qtype=qtype)
