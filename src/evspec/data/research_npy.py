"""The research's ``.npy`` event files, read without ever executing pickled code.

The research saved each clip with ``np.save(path, {"x": ..., "y": ..., "t": ..., "p": ...,
"time_start": ..., "duration_ms": ..., ...})``: a 0-d *object* array whose payload is a
pickle.  ``np.load(..., allow_pickle=True)`` would run any code such a file carries.  Here
the ``.npy`` header is parsed by hand and the payload goes through a restricted unpickler
that can only build numpy arrays, numpy dtypes and numpy scalars (the plain containers --
dict, list, tuple, str, int, float, bool, None, bytes -- need no imports at all).  Any
other global (``os.system``, ``builtins.eval``, a user class, ...) is refused *before* it
is looked up, so nothing runs.  The loaded tree is then checked to hold only arrays,
dicts and plain scalars (lists / tuples of those are admitted too; they are plain data).

Plain (non-object) ``.npy`` files holding a structured array with fields x, y, t, p
(tonic's layout) are read with ``allow_pickle=False``.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from evspec.data.errors import DataError
from evspec.data.events import EventStream
from evspec.data.limits import MAX_PICKLE_DEPTH, MAX_PICKLE_NODES, check_event_bytes
from evspec.data.polarity import map_polarity

REQUIRED_KEYS = ("x", "y", "t", "p")


def _allowed_globals() -> dict[tuple[str, str], object]:
    """The only callables a research ``.npy`` pickle may name, under both numpy 1 and 2 names."""
    reconstruct = np.empty(0).__reduce__()[0]  # numpy(._)core.multiarray._reconstruct
    scalar = np.float64(0).__reduce__()[0]  # numpy(._)core.multiarray.scalar
    frombuffer = np.arange(2).__reduce_ex__(5)[0]  # numpy(._)core.numeric._frombuffer
    table: dict[tuple[str, str], object] = {("numpy", "ndarray"): np.ndarray}
    table[("numpy", "dtype")] = np.dtype
    for core in ("numpy.core", "numpy._core"):
        table[(f"{core}.multiarray", "_reconstruct")] = reconstruct
        table[(f"{core}.multiarray", "scalar")] = scalar
        table[(f"{core}.numeric", "_frombuffer")] = frombuffer
    # numpy >= 1.25 pickles dtypes of builtin types as e.g. numpy.dtypes.Float64DType
    for dt in (np.bool_, np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16,
               np.uint32, np.uint64, np.float16, np.float32, np.float64, np.str_, np.bytes_):
        cls = type(np.dtype(dt))
        table[(cls.__module__, cls.__name__)] = cls
    return table


_ALLOWED = _allowed_globals()


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only the numpy names in ``_ALLOWED``; everything else is refused unresolved."""

    def __init__(self, file: io.BufferedIOBase, source: str) -> None:
        super().__init__(file)
        self._source = source

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise DataError(
                self._source,
                "pickle",
                f"refused to load {module}.{name}: this file's pickle names a callable that "
                "is not a numpy array/dtype/scalar (it could run code); only arrays, dicts "
                "and plain scalars are accepted",
            ) from None


def _check_plain(source: str, root: object) -> None:
    """Admit only numpy arrays (non-object), dicts with str keys, plain scalars, lists/tuples.

    An iterative depth-first walk that visits every container once however often it is
    shared (a pickle can make ``a = [a, a]`` nested 40 deep in 2 KB: 2^40 paths but 40
    containers), at most ``MAX_PICKLE_DEPTH`` deep and ``MAX_PICKLE_NODES`` values, and that
    refuses a container inside itself (reached again while still on the path).
    """
    on_path: set[int] = set()
    done: set[int] = set()
    # (object, where, depth, leaving): ``leaving`` entries take a container off the path
    stack: list[tuple[object, str, int, bool]] = [(root, "", 0, False)]
    nodes = 0
    while stack:
        obj, where, depth, leaving = stack.pop()
        if leaving:
            on_path.discard(id(obj))
            done.add(id(obj))
            continue
        here = where or "pickle"
        nodes += 1
        if nodes > MAX_PICKLE_NODES:
            raise DataError(source, "pickle", f"more than {MAX_PICKLE_NODES:,} values; a research "
                            "event file holds a few arrays and numbers")
        if depth > MAX_PICKLE_DEPTH:
            raise DataError(source, here, f"nested deeper than {MAX_PICKLE_DEPTH} levels; a "
                            "research event file is a flat dict of arrays")
        if obj is None or isinstance(obj, (bool, int, float, str, bytes)):
            continue
        if isinstance(obj, np.generic):
            if isinstance(obj, np.object_):
                raise DataError(source, here, "numpy object scalars are not accepted")
            continue
        if isinstance(obj, np.ndarray):
            if obj.dtype.hasobject:
                raise DataError(source, here, "nested object arrays are not accepted")
            continue
        if not isinstance(obj, (dict, list, tuple)):
            raise DataError(source, here, f"unexpected {type(obj).__name__} object refused")
        if id(obj) in on_path:
            raise DataError(source, here, "a container that contains itself is not plain data")
        if id(obj) in done:
            continue  # shared: already checked, with everything inside it
        on_path.add(id(obj))
        stack.append((obj, where, depth, True))
        if isinstance(obj, dict):
            for k, v in obj.items():
                if not isinstance(k, str):
                    raise DataError(source, here,
                                    f"dict key of type {type(k).__name__} is not a string")
                stack.append((v, f"{where}.{k}" if where else k, depth + 1, False))
        else:
            stack.extend((v, f"{where}[{i}]", depth + 1, False) for i, v in enumerate(obj))


def _open(path: Path) -> io.BufferedReader:
    """``open(path, "rb")`` with a missing or unreadable file as a named ``DataError``."""
    source = str(path)
    if not path.is_file():
        raise DataError(source, "file", "does not exist" if not path.exists() else "is not a file")
    try:
        return open(path, "rb")
    except OSError as exc:
        raise DataError(source, "file", f"cannot be read ({exc.strerror or exc}); check its "
                        "permissions") from None


def _read_header(f: io.BufferedIOBase, source: str) -> tuple[tuple[int, ...], bool, np.dtype]:
    try:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            return np.lib.format.read_array_header_1_0(f)
        return np.lib.format.read_array_header_2_0(f)
    except Exception as exc:  # numpy parses the header with Python's tokenizer: any error
        reason = f"not a valid .npy file ({type(exc).__name__}: {exc})"
        raise DataError(source, "file", reason) from None


def read_research_dict(path: str | Path) -> dict[str, Any]:
    """The dict stored in a research ``.npy`` (restricted unpickling; see module docstring)."""
    path = Path(path)
    source = str(path)
    with _open(path) as f:
        shape, _fortran, dtype = _read_header(f, source)
        if not dtype.hasobject:
            raise DataError(source, "file", "not a pickled dict (use load_research_npy)")
        check_event_bytes(source, "file", path.stat().st_size)
        try:
            obj = _RestrictedUnpickler(f, source).load()
        except DataError:
            raise
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError,
                IndexError, KeyError, OverflowError, MemoryError, RecursionError) as exc:
            reason = f"corrupted or truncated pickle payload ({type(exc).__name__}: {exc})"
            raise DataError(source, "pickle", reason) from None
    if isinstance(obj, np.ndarray) and obj.dtype.hasobject and obj.shape == () == tuple(shape):
        obj = obj.item()
    if not isinstance(obj, dict):
        raise DataError(source, "pickle", f"expected a dict of arrays, found {type(obj).__name__}")
    _check_plain(source, obj)
    return obj


def _sensor_from_meta(meta: dict[str, Any]) -> tuple[int, int] | None:
    if "sensor_size" in meta:
        w, h = (int(v) for v in meta["sensor_size"])
        return (w, h)
    if "width" in meta and "height" in meta:
        return (int(meta["width"]), int(meta["height"]))
    return None


def load_research_npy(
    path: str | Path, sensor_size: tuple[int, int] | None = None, *, polarity: str = "binary"
) -> tuple[EventStream, dict[str, Any]]:
    """Events and metadata from a research ``.npy`` (pickled dict or structured array).

    Returns ``(stream, meta)`` where ``meta`` holds every non-event key (``time_start``,
    ``duration_ms``, ``num_events``, ...).  ``sensor_size`` overrides a size found in the
    metadata (keys ``sensor_size`` = (w, h), or ``width`` and ``height``).  ``polarity``:
    the file's polarity convention (:mod:`evspec.data.polarity`).
    """
    path = Path(path)
    source = str(path)
    with _open(path) as f:
        shape, _fortran, dtype = _read_header(f, source)
        body = path.stat().st_size - f.tell()
    if not dtype.hasobject:
        need = int(np.prod(shape, dtype=object)) * dtype.itemsize
        check_event_bytes(source, "file", need)
        if need > body:
            raise DataError(source, "file", f"truncated: its header promises {need:,} bytes of "
                            f"events but {body:,} follow; re-export the file")
        try:
            arr = np.load(path, allow_pickle=False)
        except (ValueError, EOFError, OSError) as exc:
            raise DataError(source, "file", f"unreadable .npy ({exc})") from None
        if arr.dtype.names is None:
            raise DataError(
                source,
                "file",
                f"plain array of shape {arr.shape} has no named fields; expected a pickled dict "
                "or a structured array with fields x, y, t, p",
            )
        if polarity == "binary" or any(k not in arr.dtype.names for k in "xytp"):
            return EventStream.from_structured(arr, sensor_size, source), {}
        p = map_polarity(arr["p"], polarity, source)
        return EventStream(arr["x"], arr["y"], arr["t"], p, sensor_size, source), {}
    data = read_research_dict(path)
    missing = [k for k in REQUIRED_KEYS if k not in data]
    if missing:
        raise DataError(
            source, ",".join(missing), f"missing event key(s); the file has {sorted(data)}"
        )
    meta = {k: v for k, v in data.items() if k not in REQUIRED_KEYS}
    try:
        size = sensor_size if sensor_size is not None else _sensor_from_meta(meta)
    except (TypeError, ValueError, OverflowError):
        shown = repr(meta.get("sensor_size", (meta.get("width"), meta.get("height"))))[:80]
        raise DataError(source, "sensor_size", f"unreadable metadata {shown}") from None
    for key in REQUIRED_KEYS:
        if not isinstance(data[key], (np.ndarray, list, tuple)):
            raise DataError(source, key, f"must be an array, got {type(data[key]).__name__}")
    try:
        p = map_polarity(data["p"], polarity, source)
        stream = EventStream(data["x"], data["y"], data["t"], p, size, source)
    except DataError:
        raise
    except (TypeError, ValueError, OverflowError) as exc:  # e.g. ragged nested lists
        raise DataError(source, "x/y/t/p", f"not 1-D numeric arrays ({exc})") from None
    return stream, meta
