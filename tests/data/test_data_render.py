"""EventGPT rendering equals a straightforward per-event loop (last event wins)."""

from __future__ import annotations

import numpy as np
import pytest

from evspec.data.errors import DataError
from evspec.data.events import EventStream
from evspec.data.render import chunk_bounds, render_event_image_list, render_event_images
from evspec.data.windows import WindowLengthWarning


def loop_reference(x, y, p, n, width=None, height=None, per_chunk=False):
    """MODELS.md read literally: equal-count chunks, white canvas, paint events in order."""
    total = len(x)
    size = total // n
    images = []
    for i in range(n):
        start, end = i * size, ((i + 1) * size if i < n - 1 else total)
        if width is not None:
            w, h = width, height
        elif per_chunk:
            w, h = int(max(x[start:end])) + 1, int(max(y[start:end])) + 1
        else:
            w, h = int(max(x)) + 1, int(max(y)) + 1
        img = np.full((h, w, 3), 255, dtype=np.uint8)
        for j in range(start, end):
            img[y[j], x[j]] = (255, 0, 0) if p[j] == 1 else (0, 0, 255)
        images.append(img)
    return images


@pytest.mark.parametrize("n", [1, 5])
@pytest.mark.parametrize("canvas", ["data", "sensor"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_render_matches_loop_reference(make_stream, n, canvas, seed):
    # a 9x6 sensor with 403 events: almost every pixel is hit several times per chunk
    s = make_stream(403, 9, 6, seed=seed)
    size = s.sensor_size if canvas == "sensor" else None
    got = render_event_images(s, n, size)
    ref = loop_reference(s.x, s.y, s.p, n, *(size or (None, None)))
    assert got.shape == (n, *ref[0].shape) and got.dtype == np.uint8
    assert np.array_equal(got, np.stack(ref))


def test_last_event_wins_on_one_pixel():
    # the same pixel gets red, blue, red, blue: the last (blue) must win
    s = EventStream([2, 2, 2, 2], [1, 1, 1, 1], [0, 0, 0, 0], [1, 0, 1, 0])
    img = render_event_images(s, 1, warn_window=False)[0]
    assert img.shape == (2, 3, 3)
    assert tuple(img[1, 2]) == (0, 0, 255)
    assert (img[0] == 255).all() and (img[1, :2] == 255).all()
    flipped = EventStream([2, 2], [1, 1], [0, 0], [0, 1])
    assert tuple(render_event_images(flipped, 1, warn_window=False)[0][1, 2]) == (255, 0, 0)


def test_data_canvas_spans_whole_stream_and_sensor_canvas_is_fixed(make_stream):
    s = make_stream(200, 40, 30, seed=3)
    assert render_event_images(s, 5).shape == (5, int(s.y.max()) + 1, int(s.x.max()) + 1, 3)
    assert render_event_images(s, 5, (64, 48)).shape == (5, 48, 64, 3)


def test_equal_count_chunks_last_takes_remainder():
    assert chunk_bounds(23, 5).tolist() == [0, 4, 8, 12, 16, 23]
    assert chunk_bounds(5, 5).tolist() == [0, 1, 2, 3, 4, 5]


@pytest.mark.parametrize("n", [1, 5])
def test_per_chunk_canvas_list_matches_loop_reference(make_stream, n):
    s = make_stream(157, 30, 20, seed=5)
    got = render_event_image_list(s, n)
    ref = loop_reference(s.x, s.y, s.p, n, per_chunk=True)
    assert len(got) == n
    for a, b in zip(got, ref):
        assert np.array_equal(a, b)


def test_render_bad_inputs_name_the_file(make_stream):
    empty = EventStream.empty()
    with pytest.raises(DataError, match="empty"):
        render_event_images(empty, 5)
    one = EventStream([1], [1], [0], [1], source="one.npz")
    with pytest.raises(DataError) as err:
        render_event_images(one, 5, warn_window=False)
    assert err.value.file == "one.npz" and "only 1 event" in err.value.reason
    assert render_event_images(one, 1, warn_window=False).shape == (1, 2, 2, 3)
    s = make_stream(50, 20, 20)
    with pytest.raises(DataError, match="outside the canvas"):
        render_event_images(s, 5, (8, 8))
    with pytest.raises(ValueError, match="n"):
        render_event_images(s, 0)


def test_render_warns_outside_eventgpt_window(make_stream):
    long = make_stream(100, 8, 8, span_us=2_000_000)
    with pytest.warns(WindowLengthWarning):
        render_event_images(long, 5)
    render_event_images(long, 5, warn_window=False)  # no warning asked
