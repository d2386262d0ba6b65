"""EventStream validation, windows, durations and the window-length warning."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from evspec.data.errors import DataError
from evspec.data.events import EventStream
from evspec.data.windows import (
    CountWindows,
    TimeWindows,
    WindowLengthWarning,
    check_window_length,
    parse_duration,
)


def test_construction_converts_lossless_inputs():
    s = EventStream([1, 2], [3, 4], [10.0, 20.0], [True, False], (5, 5))
    assert s.x.dtype == np.uint16 and s.y.dtype == np.uint16
    assert s.t.dtype == np.int64 and s.p.dtype == np.uint8
    assert s.t.tolist() == [10, 20] and s.p.tolist() == [1, 0]
    assert len(s) == 2 and s.duration_us == 10 and s.t_range == (10, 20)


def test_empty_and_single_event_are_valid_streams():
    assert len(EventStream.empty((4, 4))) == 0
    assert EventStream.empty().duration_us == 0
    one = EventStream([0], [0], [5], [1])
    assert len(one) == 1 and one.duration_us == 0


@pytest.mark.parametrize(
    ("kwargs", "field", "needle"),
    [
        (dict(t=[0, 5, 3]), "t", "not sorted: t[2] = 3 < t[1] = 5"),
        (dict(t=[0.0, np.nan, 3.0]), "t", "NaN"),
        (dict(t=[0.0, 1.5, 3.0]), "t", "non-integer"),
        (dict(x=[0, 9, 1]), "x", "outside the sensor"),
        (dict(y=[0, 1, 7]), "y", "outside the sensor"),
        (dict(x=[0, -1, 1]), "x", "negative"),
        (dict(p=np.array([0, 255, 1], np.uint8)), "p", "-1 stored in an unsigned type"),
        (dict(p=[0, -1, 1]), "p", "mapped to 0/1"),
        (dict(p=[0, 2, 1]), "p", "must be 0 or 1"),
        (dict(x=[0, 1]), "x/y/t/p", "equal lengths"),
        (dict(x=[[0, 1, 2]]), "x", "1-D"),
    ],
)
def test_bad_streams_name_source_field_and_problem(kwargs, field, needle):
    base = dict(x=[0, 1, 2], y=[0, 1, 2], t=[0, 1, 2], p=[0, 1, 0])
    base.update(kwargs)
    with pytest.raises(DataError) as err:
        EventStream(**base, sensor_size=(4, 4), source="rec.npz")
    assert err.value.file == "rec.npz"
    assert err.value.field == field
    assert needle in err.value.reason
    assert str(err.value).startswith("rec.npz: ")


def test_bad_sensor_size():
    with pytest.raises(DataError, match="sensor_size"):
        EventStream([0], [0], [0], [0], (0, 4))
    with pytest.raises(DataError, match="sensor_size"):
        EventStream([0], [0], [0], [0], "big")  # type: ignore[arg-type]


def test_window_time_is_half_open_and_keeps_order(make_stream):
    s = make_stream(500, 10, 10, seed=1, span_us=1000)
    w = s.window_time(200, 400)
    mask = (s.t >= 200) & (s.t < 400)
    assert np.array_equal(w.t, s.t[mask]) and np.array_equal(w.x, s.x[mask])
    assert w.sensor_size == s.sensor_size
    assert len(s.window_time(5000, 6000)) == 0
    with pytest.raises(DataError, match="t1_us"):
        s.window_time(5, 1)


def test_window_count(make_stream):
    s = make_stream(50, 10, 10)
    w = s.window_count(45, 10)
    assert len(w) == 5 and np.array_equal(w.p, s.p[45:])
    assert len(s.window_count(60, 3)) == 0


def test_structured_round_trip(make_stream):
    s = make_stream(20, 8, 6)
    back = EventStream.from_structured(s.to_structured(), s.sensor_size)
    for k in "xytp":
        assert np.array_equal(getattr(back, k), getattr(s, k))
    with pytest.raises(DataError, match="missing fields"):
        EventStream.from_structured(np.zeros(3, [("x", "u2"), ("y", "u2")]))


def test_time_windows_spans_and_overlap():
    w = TimeWindows(500, overlap=0.5)
    assert w.spans(0, 1000) == [(0, 500), (250, 750), (500, 1000)]
    assert TimeWindows(400).spans(100, 950) == [(100, 500), (500, 900)]
    with pytest.raises(ValueError, match="overlap"):
        TimeWindows(10, overlap=1.0)
    with pytest.raises(ValueError, match="length_us"):
        TimeWindows(0)


def test_time_windows_over_stream(make_stream):
    s = make_stream(300, 5, 5, span_us=1000)
    total = sum(len(ev) for _, ev in TimeWindows(100).over(s))
    first, last = s.t_range
    covered = ((s.t - first) // 100) < ((last + 1 - first) // 100)
    assert total == int(covered.sum())


def test_count_windows(make_stream):
    s = make_stream(100, 5, 5)
    wins = list(CountWindows(30, overlap=0.5).over(s))
    assert [len(w) for w in wins] == [30] * 5
    assert np.array_equal(wins[1].t, s.t[15:45])


def test_parse_duration():
    assert parse_duration("500ms") == 500_000
    assert parse_duration("1s") == 1_000_000
    assert parse_duration("0.25s") == 250_000
    assert parse_duration("50000us") == 50_000
    for bad in ("1 minute", "ms", "-1s", "0.5us"):
        with pytest.raises(ValueError, match="duration"):
            parse_duration(bad)


def test_window_length_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert check_window_length(50_000)
    with pytest.warns(WindowLengthWarning, match="1000.0 ms"):
        assert not check_window_length(1_000_000, "clip.npz")
    with pytest.warns(WindowLengthWarning):
        check_window_length(1_000)
