"""EventGPT's event images: the representation its vision tower was trained on.

MODELS.md, "Events -> images":
1. split the stream into ``n`` chunks of **equal event count** (the last chunk takes the
   remainder; official n = 5);
2. paint each chunk on a **white** uint8 RGB canvas: polarity 0 -> blue (0, 0, 255),
   polarity 1 -> red (255, 0, 0); when several events hit one pixel the **last one in
   stream order wins**; no counts, no decay.

Canvas size (:data:`CANVASES`, chosen by :func:`render_canvas`):

* ``"chunk"`` -- the release's: chunk i is painted on ``max(y_i) + 1`` by ``max(x_i) + 1`` of
  its own events (its ``get_event_images_list``), so the n images may differ in size;
  what a real EventGPT checkpoint saw in training (:func:`render_event_image_list`);
* ``"data"`` -- one canvas sized from the whole stream's maxima, so the images stack;
* ``"sensor"`` -- the recording's sensor size (what the synthetic world's models saw).

Last-wins without a Python loop: for every (chunk, pixel) the index of the last event is
``max`` over the event indices that hit it, computed with ``np.maximum.at`` (unbuffered,
so repeated indices are all honoured -- plain fancy assignment gives no such guarantee).
"""

from __future__ import annotations

import numpy as np

from evspec.data.errors import DataError
from evspec.data.events import EventStream
from evspec.data.limits import check_canvas
from evspec.data.windows import check_window_length

#: the canvas choices of :func:`render_canvas`
CANVASES = ("chunk", "data", "sensor")

WHITE = (255, 255, 255)
BLUE = (0, 0, 255)  # polarity 0
RED = (255, 0, 0)  # polarity 1

# colour code = polarity of the pixel's last event (0 blue, 1 red), or 2 = no event (white)
_PALETTE = np.array([BLUE, RED, WHITE], dtype=np.uint8)  # [3, 3]
_NO_EVENT = 2


def chunk_bounds(n_events: int, n: int) -> np.ndarray:
    """Start indices of the n equal-count chunks plus the end: ``[n + 1]`` int64.

    Chunk i is ``[i * (N // n), (i + 1) * (N // n))``; the last chunk ends at N.
    """
    size = n_events // n
    bounds = np.arange(n + 1, dtype=np.int64) * size
    bounds[-1] = n_events
    return bounds


def _check_inputs(stream: EventStream, n: int) -> None:
    if not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"render: n (number of event images) must be an integer >= 1, got {n!r}")
    if len(stream) == 0:
        raise DataError(stream.source, "events", "cannot render an empty event stream")
    if len(stream) < n:
        raise DataError(
            stream.source,
            "events",
            f"only {len(stream)} event(s) for n={n} equal-count images; "
            f"need at least {n} events (use a longer window or a smaller n)",
        )


def _canvas(stream: EventStream, sensor_size: tuple[int, int] | None) -> tuple[int, int]:
    """``(width, height)`` of the canvas; checks every event lies on it."""
    max_x, max_y = int(stream.x.max()), int(stream.y.max())
    if sensor_size is None:
        check_canvas(stream.source, max_x + 1, max_y + 1, f"events reaching (x={max_x}, y={max_y})")
        return max_x + 1, max_y + 1
    w, h = int(sensor_size[0]), int(sensor_size[1])
    if w <= 0 or h <= 0:
        raise ValueError(f"render: sensor_size must be positive (width, height), got {sensor_size}")
    check_canvas(stream.source, w, h, f"the sensor size {(w, h)}")
    if max_x >= w or max_y >= h:
        raise DataError(
            stream.source,
            "x" if max_x >= w else "y",
            f"events reach (x={max_x}, y={max_y}), outside the canvas (width, height) = "
            f"{(w, h)}; pass the recording's sensor size or sensor_size=None",
        )
    return w, h


def _paint(
    x: np.ndarray, y: np.ndarray, p: np.ndarray, bounds: np.ndarray, w: int, h: int
) -> np.ndarray:
    """Paint events into one image per chunk.

    x, y, p: ``[N]``; ``bounds``: ``[n + 1]`` chunk start indices plus N.
    Returns ``[n, h, w, 3]`` uint8.
    """
    n = len(bounds) - 1
    cells = n * h * w
    itype = np.int32 if max(cells, len(x)) < 2**31 else np.int64
    # flat cell index of each event: (chunk, row, column) -> chunk * h * w + y * w + x   [N]
    cell = y.astype(itype)
    cell *= itype(w)
    cell += x
    for i in range(1, n):  # chunk offsets, added in place slice by slice
        cell[bounds[i] : bounds[i + 1]] += itype(i * h * w)
    last = np.full(cells, -1, dtype=itype)  # [n * h * w] index of the last event per cell
    np.maximum.at(last, cell, np.arange(len(x), dtype=itype))
    # colour code per event, plus a final "no event" entry that index -1 picks   [N + 1]
    event_code = np.append(p, np.uint8(_NO_EVENT))
    code = np.take(event_code, last)  # [n * h * w]
    return np.take(_PALETTE, code, axis=0).reshape(n, h, w, 3)


def render_event_images(
    stream: EventStream,
    n: int = 5,
    sensor_size: tuple[int, int] | None = None,
    *,
    warn_window: bool = True,
) -> np.ndarray:
    """EventGPT's n event images of ``stream``: ``[n, H, W, 3]`` uint8 RGB.

    ``sensor_size=None`` sizes the canvas from the data (whole stream); pass
    ``(width, height)`` (e.g. ``stream.sensor_size``) for a fixed canvas.  Warns
    (``WindowLengthWarning``) when the stream spans far more or less than ~50 ms, unless
    ``warn_window=False``.  Raises ``DataError`` for an empty stream, fewer events than
    images, or events outside a fixed canvas.
    """
    _check_inputs(stream, n)
    if warn_window:
        check_window_length(stream.duration_us, stream.source)
    w, h = _canvas(stream, sensor_size)
    return _paint(stream.x, stream.y, stream.p, chunk_bounds(len(stream), n), w, h)


def render_event_image_list(
    stream: EventStream,
    n: int = 5,
    sensor_size: tuple[int, int] | None = None,
    *,
    warn_window: bool = True,
) -> list[np.ndarray]:
    """The release's exact output: n images ``[H_i, W_i, 3]``, each chunk on its own canvas.

    With ``sensor_size=None`` chunk i's canvas is ``max(y_i) + 1`` by ``max(x_i) + 1`` of
    that chunk alone (sizes may differ); with a sensor size all share it.
    """
    _check_inputs(stream, n)
    if warn_window:
        check_window_length(stream.duration_us, stream.source)
    bounds = chunk_bounds(len(stream), n)
    images = []
    for i in range(n):
        part = stream.window_count(int(bounds[i]), int(bounds[i + 1] - bounds[i]))
        w, h = _canvas(part, sensor_size)
        images.append(_paint(part.x, part.y, part.p, chunk_bounds(len(part), 1), w, h)[0])
    return images


def render_canvas(
    stream: EventStream,
    n: int = 5,
    canvas: str = "chunk",
    *,
    warn_window: bool = True,
) -> np.ndarray | tuple[np.ndarray, ...]:
    """EventGPT's n event images on the ``canvas`` of :data:`CANVASES`.

    Returns one ``[n, H, W, 3]`` uint8 array when the images share a size (always for
    ``"data"`` and ``"sensor"``), else a tuple of n ``[H_i, W_i, 3]`` arrays (``"chunk"``
    with chunks of different extents); :class:`~evspec.models.request.Request` takes both.
    ``"sensor"`` on a stream of unknown sensor size falls back to ``"data"``.
    """
    if canvas not in CANVASES:
        raise ValueError(f"render: canvas must be one of {', '.join(CANVASES)}, got {canvas!r}")
    if canvas in ("data", "sensor"):
        size = stream.sensor_size if canvas == "sensor" else None
        return render_event_images(stream, n, size, warn_window=warn_window)
    images = render_event_image_list(stream, n, None, warn_window=warn_window)
    if len({img.shape for img in images}) == 1:
        return np.stack(images)  # [n, H, W, 3]
    return tuple(images)
