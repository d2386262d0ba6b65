"""A manifest entry -> the uint8 arrays a ``Request`` carries (video frames, event images)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np

from evspec.data.clipio import load_events
from evspec.data.manifest import ClipEntry
from evspec.data.render import render_event_images
from evspec.data.video import read_video


def load_clip_inputs(
    entry: ClipEntry,
    root: str | Path,
    n_event_images: int = 5,
    num_frames: int = 8,
    *,
    canvas: Literal["data", "sensor"] = "data",
    warn_window: bool = True,
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Read one clip: ``(video [num_frames, H, W, 3], event_images [n, H', W', 3])``, uint8 RGB.

    Either is ``None`` when the entry has no such file.  ``canvas="data"`` sizes the event
    canvas from the events (EventGPT's choice); ``"sensor"`` uses the recording's sensor
    size.  A window far from EventGPT's ~50 ms warns (``WindowLengthWarning``) unless
    ``warn_window=False``.  Bad files raise ``DataError`` naming the file.
    """
    if canvas not in ("data", "sensor"):
        raise ValueError(f"load_clip_inputs: canvas must be 'data' or 'sensor', got {canvas!r}")
    root = Path(root)
    video = read_video(root / entry.video, num_frames) if entry.video is not None else None
    images = None
    if entry.events is not None:
        stream = load_events(root / entry.events, entry.window_us)
        size = stream.sensor_size if canvas == "sensor" else None
        images = render_event_images(stream, n_event_images, size, warn_window=warn_window)
    return video, images
