"""DSEC event files (``events/left/events.h5``): windows read without loading the file.

Layout (DSEC): datasets ``events/x``, ``events/y`` (uint16), ``events/t`` (uint32, µs
relative to ``t_offset``), ``events/p`` (uint8, 0/1); ``t_offset`` (int64 µs, add it to
``t``); ``ms_to_idx`` (uint64; entry k = index of the first event with ``t >= k * 1000``).
The files are usually compressed with the Blosc filter from ``hdf5plugin``; both h5py and
hdf5plugin come with the ``dsec`` extra (``pip install 'evspec[dsec]'``).

A window ``[t0, t1)`` (absolute µs) is located with ``ms_to_idx`` to a bracket at most one
millisecond too wide on each side, only that bracket of ``t`` is read, and the exact
bounds are found with a binary search: the cost is proportional to the window, not the file.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType, TracebackType
from typing import Any

import numpy as np

from evspec.data.errors import DataError
from evspec.data.events import EventStream
from evspec.data.limits import check_event_bytes

DSEC_SENSOR_SIZE = (640, 480)
"""DSEC's event camera (Prophesee Gen3.1): width 640, height 480."""

_DATASETS = ("events/x", "events/y", "events/t", "events/p", "t_offset", "ms_to_idx")


def _h5py(source: str) -> ModuleType:
    try:
        import h5py
    except ModuleNotFoundError:
        raise DataError(
            source, "file", "reading DSEC .h5 files needs h5py: pip install 'evspec[dsec]'"
        ) from None
    try:  # registers the Blosc (and other) HDF5 filters DSEC files are compressed with
        import hdf5plugin  # noqa: F401
    except ModuleNotFoundError:
        pass
    return h5py


def _filter_hint(exc: BaseException) -> str:
    text = str(exc)
    if "filter" in text.lower():
        return f"{text} -- the data is compressed; install hdf5plugin: pip install 'evspec[dsec]'"
    return text


class DsecEventsFile:
    """An open DSEC ``events.h5``; use as a context manager.

    ``t_first_us`` / ``t_last_us`` are absolute (offset added); ``read_window`` returns an
    ``EventStream`` with absolute times and sensor size 640 x 480.
    """

    def __init__(self, path: str | Path, sensor_size: tuple[int, int] = DSEC_SENSOR_SIZE) -> None:
        self.path = Path(path)
        self.source = str(self.path)
        self.sensor_size = sensor_size
        if not self.path.is_file():
            raise DataError(self.source, "file", "does not exist")
        h5py = _h5py(self.source)
        try:
            self._f = h5py.File(self.path, "r")
        except OSError as exc:
            raise DataError(self.source, "file", f"not a readable HDF5 file ({exc})") from None
        try:
            missing = [d for d in _DATASETS if d not in self._f]
            if missing:
                raise DataError(self.source, ",".join(missing), "missing DSEC dataset(s)")
            self._x, self._y = self._f["events/x"], self._f["events/y"]
            self._t, self._p = self._f["events/t"], self._f["events/p"]
            self._ms_to_idx = self._f["ms_to_idx"]
            self.t_offset = int(self._f["t_offset"][()])
            lengths = {k: int(self._f[k].shape[0]) for k in _DATASETS[:4]}
            if len(set(lengths.values())) != 1:
                raise DataError(self.source, "events", f"x/y/t/p lengths differ: {lengths}")
            self._n = lengths["events/t"]
            self._n_ms = int(self._ms_to_idx.shape[0])
            if self._n and self._n_ms == 0:
                raise DataError(self.source, "ms_to_idx", "is empty but there are events")
        except DataError:
            self._f.close()
            raise
        except (OSError, KeyError, TypeError, ValueError) as exc:
            self._f.close()
            reason = f"corrupted DSEC file ({_filter_hint(exc)})"
            raise DataError(self.source, "file", reason) from None

    # -- context manager ---------------------------------------------------------------------
    def __enter__(self) -> DsecEventsFile:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self._f.close()

    # -- extent ------------------------------------------------------------------------------
    def __len__(self) -> int:
        return self._n

    def _read(self, dset: Any, i0: int, i1: int, name: str) -> np.ndarray:
        try:
            return np.asarray(dset[i0:i1])
        except (OSError, ValueError) as exc:
            raise DataError(self.source, name, f"cannot read ({_filter_hint(exc)})") from None

    @property
    def t_first_us(self) -> int:
        if self._n == 0:
            raise DataError(self.source, "events/t", "the file holds no events")
        return int(self._read(self._t, 0, 1, "events/t")[0]) + self.t_offset

    @property
    def t_last_us(self) -> int:
        if self._n == 0:
            raise DataError(self.source, "events/t", "the file holds no events")
        return int(self._read(self._t, self._n - 1, self._n, "events/t")[0]) + self.t_offset

    # -- windows -----------------------------------------------------------------------------
    def _ms_index(self, ms: int) -> int:
        """First event index with relative t >= ms * 1000 (N past the table's end)."""
        if ms <= 0:
            return 0
        if ms >= self._n_ms:
            return self._n
        return int(self._read(self._ms_to_idx, ms, ms + 1, "ms_to_idx")[0])

    def index_range(self, t0_us: int, t1_us: int) -> tuple[int, int]:
        """Event indices ``[i0, i1)`` of the events with ``t0_us <= t < t1_us`` (absolute µs)."""
        if t1_us < t0_us:
            raise DataError(self.source, "window", f"t1_us={t1_us} < t0_us={t0_us}")
        if self._n == 0:
            return 0, 0
        rel0, rel1 = int(t0_us) - self.t_offset, int(t1_us) - self.t_offset
        lo = self._ms_index(rel0 // 1000)  # first event at or after the ms holding rel0
        hi = self._ms_index(-(-rel1 // 1000))  # first event at or after the ms boundary >= rel1
        lo, hi = min(lo, self._n), min(max(hi, lo), self._n)
        t = self._read(self._t, lo, hi, "events/t").astype(np.int64)  # [hi - lo] relative µs
        # ms_to_idx must bracket the window: the event before lo is earlier than rel0 and
        # the event at hi is not earlier than rel1 (cheap one-element checks).
        if lo > 0 and int(self._read(self._t, lo - 1, lo, "events/t")[0]) >= rel0:
            raise DataError(self.source, "ms_to_idx", f"inconsistent with events/t near index {lo}")
        if hi < self._n and int(self._read(self._t, hi, hi + 1, "events/t")[0]) < rel1:
            raise DataError(self.source, "ms_to_idx", f"inconsistent with events/t near index {hi}")
        i0 = lo + int(np.searchsorted(t, rel0, side="left"))
        i1 = lo + int(np.searchsorted(t, rel1, side="left"))
        return i0, i1

    def read_range(self, i0: int, i1: int) -> EventStream:
        """Events ``i0 .. i1`` as an ``EventStream`` with absolute times (validated)."""
        per_event = sum(d.dtype.itemsize for d in (self._x, self._y, self._t, self._p))
        check_event_bytes(self.source, "events", max(i1 - i0, 0) * per_event)
        t = self._read(self._t, i0, i1, "events/t").astype(np.int64) + self.t_offset
        return EventStream(
            self._read(self._x, i0, i1, "events/x"),
            self._read(self._y, i0, i1, "events/y"),
            t,
            self._read(self._p, i0, i1, "events/p"),
            self.sensor_size,
            self.source,
        )

    def read_window(self, t0_us: int, t1_us: int) -> EventStream:
        """Events with ``t0_us <= t < t1_us`` (absolute µs)."""
        return self.read_range(*self.index_range(t0_us, t1_us))

    def read_all(self) -> EventStream:
        return self.read_range(0, self._n)


def write_dsec_events_h5(
    path: str | Path, stream: EventStream, t_offset_us: int, *, compress: bool = True
) -> None:
    """Write ``stream`` in DSEC's ``events.h5`` layout (for tests, benchmarks, conversions).

    Times are stored relative to ``t_offset_us`` as uint32; ``compress`` uses hdf5plugin's
    Blosc (as DSEC does) and needs hdf5plugin installed.
    """
    h5py = _h5py(str(path))
    t_rel = stream.t - t_offset_us  # [N] relative µs
    if len(stream) and (t_rel[0] < 0 or t_rel[-1] > np.iinfo(np.uint32).max):
        raise ValueError("write_dsec_events_h5: times must lie in [t_offset, t_offset + 2**32) µs")
    n_ms = int(t_rel[-1]) // 1000 + 1 if len(stream) else 0
    ms_to_idx = np.searchsorted(t_rel, np.arange(n_ms, dtype=np.int64) * 1000, side="left")
    kwargs: dict[str, Any] = {}
    if compress and len(stream):  # (an empty dataset cannot be chunked)
        import hdf5plugin

        kwargs = dict(hdf5plugin.Blosc(cname="zstd", clevel=1, shuffle=hdf5plugin.Blosc.SHUFFLE))
        kwargs["chunks"] = True
    with h5py.File(path, "w") as f:
        f.create_dataset("events/x", data=stream.x.astype(np.uint16), **kwargs)
        f.create_dataset("events/y", data=stream.y.astype(np.uint16), **kwargs)
        f.create_dataset("events/t", data=t_rel.astype(np.uint32), **kwargs)
        f.create_dataset("events/p", data=stream.p.astype(np.uint8), **kwargs)
        f.create_dataset("ms_to_idx", data=ms_to_idx.astype(np.uint64), **kwargs)
        f.create_dataset("t_offset", data=np.int64(t_offset_us))
