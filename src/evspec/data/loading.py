"""A manifest entry -> the uint8 arrays a ``Request`` carries (video frames, event images)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np

from evspec.data.clipio import load_events
from evspec.data.manifest import ClipEntry
from evspec.data.render import CANVASES, render_canvas
from evspec.data.video import read_video

#: one [n, H, W, 3] array, or n [H_i, W_i, 3] arrays of differing sizes
EventImages = np.ndarray | tuple[np.ndarray, ...]
#: ``meta["source"]`` of the synthetic world's manifests
WORLD_SOURCE = "evspec synthetic world"


def manifest_render_options(meta: dict) -> tuple[str, bool]:
    """``(canvas, warn_window)`` for a manifest's event streams: ``meta["event_canvas"]``
    when set; the synthetic world's models were trained on sensor-sized canvases over 1 s
    clips, so its manifests render that way without the ~50 ms window warning; anything
    else gets the EventGPT release's canvas (``chunk``: each image sized from its own
    events) and the warning."""
    canvas = meta.get("event_canvas")
    world = meta.get("source") == WORLD_SOURCE
    if canvas is None:
        canvas = "sensor" if world else "chunk"
    if canvas not in CANVASES:
        raise ValueError(
            f"manifest meta.event_canvas = {canvas!r}: use 'chunk', 'data' or 'sensor'"
        )
    return canvas, not world


def load_clip_inputs(
    entry: ClipEntry,
    root: str | Path,
    n_event_images: int = 5,
    num_frames: int = 8,
    *,
    canvas: Literal["chunk", "data", "sensor"] = "chunk",
    warn_window: bool = True,
) -> tuple[np.ndarray | None, EventImages | None]:
    """Read one clip: ``(video [num_frames, H, W, 3], event_images [n, H', W', 3])``, uint8 RGB.

    Either is ``None`` when the entry has no such file.  ``canvas`` (see
    :func:`~evspec.data.render.render_canvas`): ``"chunk"`` sizes each event image from its
    own events, as the EventGPT release does (the images then may differ in size and come
    as a tuple); ``"data"`` sizes one canvas from the whole window; ``"sensor"`` uses the
    recording's sensor size.  A window far from EventGPT's ~50 ms warns
    (``WindowLengthWarning``) unless ``warn_window=False``.  Bad files raise ``DataError`` naming the file.
    """
    if canvas not in CANVASES:
        raise ValueError(
            f"load_clip_inputs: canvas must be one of {', '.join(CANVASES)}, got {canvas!r}"
        )
    root = Path(root)
    video = read_video(root / entry.video, num_frames) if entry.video is not None else None
    images = None
    if entry.events is not None:
        stream = load_events(root / entry.events, entry.window_us)
        images = render_canvas(stream, n_event_images, canvas, warn_window=warn_window)
    return video, images
