"""The project's own events file, and ``load_events`` for every supported format.

Own format (docs/data.md): a NumPy ``.npz`` archive (zip, deflate-compressed by default)
read with ``allow_pickle=False``; members

===============  =========  ==========================================================
``format``       str, 0-d   ``"evspec-events"``
``version``      int64 0-d  ``1``
``x``, ``y``     uint16 [N] column, row
``t``            int64 [N]  microseconds, non-decreasing
``p``            uint8 [N]  polarity 0 / 1
``sensor_size``  int64 [2]  (width, height); (0, 0) when unknown
===============  =========  ==========================================================

``load_events`` dispatches on the suffix: ``.npz`` -> this format; ``.npy`` -> the
research's pickled dicts (restricted loader) or tonic-style structured arrays; ``.h5`` /
``.hdf5`` -> DSEC ``events.h5`` (with an optional window, read without loading the file).
"""

from __future__ import annotations

import os
import zipfile
import zlib
from tokenize import TokenError
from pathlib import Path

import numpy as np

from evspec.data.atomic import atomic_file
from evspec.data.errors import DataError
from evspec.data.events import EventStream
from evspec.data.limits import check_event_bytes
from evspec.data.polarity import map_polarity

FORMAT_TAG = "evspec-events"
FORMAT_VERSION = 1
_MEMBERS = ("format", "version", "x", "y", "t", "p", "sensor_size")


def save_events(path: str | Path, stream: EventStream, *, compress: bool = True) -> Path:
    """Write ``stream`` to ``path`` (``.npz``) atomically: temp file, then ``os.replace``.

    An interrupted write never leaves a partial file at ``path``.
    """
    path = Path(path)
    if path.suffix != ".npz":
        raise ValueError(f"save_events: {path}: events files must end in .npz")
    size = np.asarray(stream.sensor_size if stream.sensor_size else (0, 0), dtype=np.int64)
    arrays = dict(
        format=np.array(FORMAT_TAG),
        version=np.array(FORMAT_VERSION, dtype=np.int64),
        x=stream.x,
        y=stream.y,
        t=stream.t,
        p=stream.p,
        sensor_size=size,
    )
    with atomic_file(path) as tmp, open(tmp, "wb") as f:
        (np.savez_compressed if compress else np.savez)(f, **arrays)
        f.flush()
        os.fsync(f.fileno())
    return path


def _member_bytes(z: np.lib.npyio.NpzFile, name: str, source: str) -> int:
    """Bytes member ``name`` decodes to, from its header; a header promising more than the
    member's recorded uncompressed size (a forged or torn file) is refused."""
    info = z.zip.getinfo(f"{name}.npy")
    with z.zip.open(info) as f:
        version = np.lib.format.read_magic(f)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else (
            np.lib.format.read_array_header_2_0)
        shape, _fortran, dtype = read(f)
        header = f.tell() if f.seekable() else 0
    need = int(np.prod(shape, dtype=object)) * dtype.itemsize
    if need > info.file_size - header:
        raise DataError(source, name, f"the header promises {need:,} bytes but the member holds "
                        f"{info.file_size - header:,}; the file is torn or forged (re-export it)")
    return need


def _load_npz(path: Path, polarity: str = "binary") -> EventStream:
    source = str(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in _MEMBERS if k not in z.files]
            if missing:
                raise DataError(source, ",".join(missing), f"missing member(s); has {z.files}")
            tag = str(z["format"][()])
            if tag != FORMAT_TAG:
                raise DataError(source, "format", f"is {tag!r}, expected {FORMAT_TAG!r}")
            version = int(z["version"][()])
            if version != FORMAT_VERSION:
                raise DataError(
                    source, "version", f"is {version}; this evspec reads version {FORMAT_VERSION}"
                )
            size_arr = z["sensor_size"]
            # sizes from the members' .npy headers, before anything is decompressed
            need = {k: _member_bytes(z, k, source) for k in ("x", "y", "t", "p")}
            check_event_bytes(source, "x/y/t/p", sum(need.values()))
            arrays = {k: z[k] for k in ("x", "y", "t", "p")}
    except DataError:
        raise
    except (zipfile.BadZipFile, zlib.error, EOFError, ValueError, OSError, KeyError, SyntaxError,
            TokenError, TypeError, NotImplementedError, RuntimeError, MemoryError) as exc:
        # RuntimeError: zipfile's "encrypted member"; NotImplementedError: an unknown method;
        # SyntaxError, TokenError: numpy parses each member's header with Python's tokenizer
        raise DataError(
            source, "file", f"corrupted or truncated events file ({type(exc).__name__}: {exc})"
        ) from None
    if size_arr.shape != (2,):
        raise DataError(source, "sensor_size", f"must have shape (2,), got {size_arr.shape}")
    w, h = int(size_arr[0]), int(size_arr[1])
    sensor = None if (w, h) == (0, 0) else (w, h)
    p = map_polarity(arrays["p"], polarity, source)
    return EventStream(arrays["x"], arrays["y"], arrays["t"], p, sensor, source)


def load_events(
    path: str | Path,
    window_us: tuple[int, int] | None = None,
    sensor_size: tuple[int, int] | None = None,
    *,
    polarity: str = "binary",
) -> EventStream:
    """Load an event stream from any supported file; optionally the window ``[t0, t1)`` µs.

    ``sensor_size`` overrides the size stored in (or implied by) the file.  ``polarity``:
    how the file's polarity values map onto {0, 1} (:mod:`evspec.data.polarity`; DSEC
    ``.h5`` files store {0, 1}).
    """
    path = Path(path)
    source = str(path)
    if not path.exists():
        raise DataError(source, "file", "does not exist")
    suffix = path.suffix.lower()
    if suffix in (".h5", ".hdf5"):
        from evspec.data.dsec_h5 import DSEC_SENSOR_SIZE, DsecEventsFile

        map_polarity(None, polarity)  # checks the convention's name
        with DsecEventsFile(path, sensor_size or DSEC_SENSOR_SIZE) as f:
            return f.read_all() if window_us is None else f.read_window(*window_us)
    if suffix == ".npz":
        stream = _load_npz(path, polarity)
    elif suffix == ".npy":
        from evspec.data.research_npy import load_research_npy

        stream, _meta = load_research_npy(path, polarity=polarity)
    else:
        raise DataError(
            source, "file", f"unknown events suffix {path.suffix!r}; expected .npz, .npy or .h5"
        )
    if sensor_size is not None:
        stream = EventStream(stream.x, stream.y, stream.t, stream.p, sensor_size, source)
    if window_us is not None:
        stream = stream.window_time(*window_us)
    return stream
