"""The in-memory event stream: named fields x, y, t, p and an explicit sensor size.

Conventions (DSEC's, and what EventGPT was trained on): ``x`` is the column, ``y`` the row,
``t`` is in microseconds, ``p`` is 0 (brightness decrease) or 1 (increase).  The stream is
ordered by time; events with equal ``t`` keep their recorded order ("stream order"), which
matters for EventGPT's last-event-wins rendering.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from evspec.data.errors import MEMORY, DataError

# tonic-style structured dtype, for interoperability (``to_structured`` / ``from_structured``).
EVENT_DTYPE = np.dtype([("x", "<u2"), ("y", "<u2"), ("t", "<i8"), ("p", "u1")])

_U16_MAX = int(np.iinfo(np.uint16).max)


def _first_index(mask: np.ndarray) -> int:
    return int(np.flatnonzero(mask)[0])


def _check_1d(source: str, name: str, values: object) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise DataError(source, name, f"must be a 1-D array, got shape {arr.shape}")
    if arr.dtype.kind not in "biuf":
        raise DataError(source, name, f"must be numeric, got dtype {arr.dtype}")
    return arr


def _to_integer(source: str, name: str, arr: np.ndarray) -> np.ndarray:
    """Floats are accepted only when finite and integral (no silent rounding)."""
    if arr.dtype.kind != "f":
        return arr
    bad = ~np.isfinite(arr)
    if bad.any():
        i = _first_index(bad)
        raise DataError(source, name, f"contains NaN or infinity (first at index {i}: {arr[i]})")
    frac = arr != np.floor(arr)
    if frac.any():
        i = _first_index(frac)
        raise DataError(
            source, name, f"has non-integer value {arr[i]} at index {i}; round or rescale it first"
        )
    return arr.astype(np.int64)


def _coord(source: str, name: str, values: object) -> np.ndarray:
    arr = _to_integer(source, name, _check_1d(source, name, values))
    if arr.dtype == np.uint16:
        return arr
    if arr.size:
        lo, hi = int(arr.min()), int(arr.max())
        if lo < 0:
            i = _first_index(arr < 0)
            raise DataError(source, name, f"negative coordinate {arr[i]} at index {i}")
        if hi > _U16_MAX:
            i = _first_index(arr > _U16_MAX)
            raise DataError(source, name, f"coordinate {arr[i]} at index {i} exceeds 65535")
    return arr.astype(np.uint16)


def _time(source: str, values: object) -> np.ndarray:
    arr = _to_integer(source, "t", _check_1d(source, "t", values))
    if arr.dtype == np.uint64 and arr.size and int(arr.max()) > np.iinfo(np.int64).max:
        raise DataError(source, "t", "timestamps overflow int64 microseconds")
    arr = arr.astype(np.int64, copy=False)
    if arr.size > 1:
        back = arr[1:] < arr[:-1]
        if back.any():
            i = _first_index(back) + 1
            raise DataError(
                source,
                "t",
                f"timestamps are not sorted: t[{i}] = {arr[i]} < t[{i - 1}] = {arr[i - 1]} "
                "(sort the stream by time with a stable sort first)",
            )
    return arr


def _polarity(source: str, values: object) -> np.ndarray:
    arr = _to_integer(source, "p", _check_1d(source, "p", values))
    if arr.dtype == np.bool_:
        return arr.astype(np.uint8)
    bad = (arr != 0) & (arr != 1)
    if bad.any():
        i = _first_index(bad)
        v = arr[i]
        if arr.dtype == np.uint8 and v == 255:
            hint = (
                "255 in a uint8 polarity array is -1 stored in an unsigned type; "
                "convert with p = (p == 1)"
            )
        elif v == -1:
            hint = (
                "polarity -1/+1 must be mapped to 0/1: load with polarity='signed' (-1 -> 0) "
                "or 'release' (every non-zero value -> 1, as the EventGPT release paints)"
            )
        else:
            hint = "polarity must be 0 or 1"
        raise DataError(source, "p", f"value {v} at index {i}: {hint}")
    return arr.astype(np.uint8, copy=False)


def _sensor(source: str, sensor_size: object) -> tuple[int, int] | None:
    if sensor_size is None:
        return None
    try:
        w, h = (int(v) for v in sensor_size)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        raise DataError(
            source, "sensor_size", f"must be (width, height) integers, got {sensor_size!r}"
        ) from None
    if w <= 0 or h <= 0:
        raise DataError(source, "sensor_size", f"must be positive (width, height), got {(w, h)}")
    return (w, h)


@dataclass(frozen=True, eq=False)
class EventStream:
    """An event recording: ``x, y`` ``[N]`` uint16, ``t`` ``[N]`` int64 µs, ``p`` ``[N]`` uint8.

    ``sensor_size`` is ``(width, height)`` or ``None`` when unknown.  Construction converts
    lossless inputs (lists, other integer dtypes, integral floats, bool polarity) and refuses
    everything else with a ``DataError`` naming ``source`` (the file the data came from):
    unequal lengths, unsorted or NaN times, negative or out-of-sensor coordinates, polarity
    outside {0, 1}.
    """

    x: np.ndarray
    y: np.ndarray
    t: np.ndarray
    p: np.ndarray
    sensor_size: tuple[int, int] | None = None
    source: str = field(default=MEMORY, repr=False)

    def __post_init__(self) -> None:
        src = self.source
        set_ = object.__setattr__
        set_(self, "x", _coord(src, "x", self.x))
        set_(self, "y", _coord(src, "y", self.y))
        set_(self, "t", _time(src, self.t))
        set_(self, "p", _polarity(src, self.p))
        set_(self, "sensor_size", _sensor(src, self.sensor_size))
        lengths = {k: len(getattr(self, k)) for k in ("x", "y", "t", "p")}
        if len(set(lengths.values())) != 1:
            raise DataError(src, "x/y/t/p", f"arrays must have equal lengths, got {lengths}")
        if self.sensor_size is not None and len(self.x):
            w, h = self.sensor_size
            for name, limit in (("x", w), ("y", h)):
                arr = getattr(self, name)
                outside = arr >= limit
                if outside.any():
                    i = _first_index(outside)
                    raise DataError(
                        src,
                        name,
                        f"{name}[{i}] = {arr[i]} is outside the sensor (width, height) = "
                        f"{self.sensor_size}; pass the right sensor_size or sensor_size=None",
                    )

    # -- construction without re-validation (slices of a valid stream stay valid) ----------
    @classmethod
    def _trusted(
        cls,
        x: np.ndarray,
        y: np.ndarray,
        t: np.ndarray,
        p: np.ndarray,
        sensor_size: tuple[int, int] | None,
        source: str,
    ) -> EventStream:
        obj = object.__new__(cls)
        for k, v in (("x", x), ("y", y), ("t", t), ("p", p)):
            object.__setattr__(obj, k, v)
        object.__setattr__(obj, "sensor_size", sensor_size)
        object.__setattr__(obj, "source", source)
        return obj

    def _slice(self, start: int, stop: int) -> EventStream:
        s = slice(start, stop)
        return EventStream._trusted(
            self.x[s], self.y[s], self.t[s], self.p[s], self.sensor_size, self.source
        )

    @classmethod
    def empty(cls, sensor_size: tuple[int, int] | None = None) -> EventStream:
        z = np.zeros(0, np.uint16)
        return cls(z, z, np.zeros(0, np.int64), np.zeros(0, np.uint8), sensor_size)

    # -- basic properties --------------------------------------------------------------------
    def __len__(self) -> int:
        return int(self.t.shape[0])

    @property
    def duration_us(self) -> int:
        """``t[-1] - t[0]`` (0 for fewer than two events)."""
        return int(self.t[-1] - self.t[0]) if len(self) > 1 else 0

    @property
    def t_range(self) -> tuple[int, int] | None:
        """``(t_first, t_last)`` in µs, or ``None`` when empty."""
        return (int(self.t[0]), int(self.t[-1])) if len(self) else None

    # -- windows -----------------------------------------------------------------------------
    def window_time(self, t0_us: int, t1_us: int) -> EventStream:
        """Events with ``t0_us <= t < t1_us`` (a view, no copy)."""
        if t1_us < t0_us:
            raise DataError(self.source, "window", f"t1_us={t1_us} < t0_us={t0_us}")
        i0 = int(np.searchsorted(self.t, t0_us, side="left"))
        i1 = int(np.searchsorted(self.t, t1_us, side="left"))
        return self._slice(i0, i1)

    def window_count(self, start: int, n: int) -> EventStream:
        """Events ``start .. start + n`` in stream order (clipped at the end; a view)."""
        if start < 0 or n < 0:
            raise DataError(self.source, "window", f"start={start} and n={n} must be >= 0")
        return self._slice(min(start, len(self)), min(start + n, len(self)))

    # -- interop -----------------------------------------------------------------------------
    def to_structured(self) -> np.ndarray:
        """A tonic-style structured array ``[N]`` with fields x, y, t, p."""
        out = np.empty(len(self), EVENT_DTYPE)
        out["x"], out["y"], out["t"], out["p"] = self.x, self.y, self.t, self.p
        return out

    @classmethod
    def from_structured(
        cls,
        events: np.ndarray,
        sensor_size: tuple[int, int] | None = None,
        source: str = MEMORY,
    ) -> EventStream:
        """From a structured array with fields x, y, t, p (e.g. tonic's)."""
        names = events.dtype.names or ()
        missing = [k for k in ("x", "y", "t", "p") if k not in names]
        if missing:
            raise DataError(source, ",".join(missing), f"missing fields (has {list(names)})")
        return cls(events["x"], events["y"], events["t"], events["p"], sensor_size, source)
