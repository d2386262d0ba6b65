"""Resource limits on untrusted input files (docs/security.md).

A small file must not be able to ask for gigabytes of memory or hours of work.  The limits
are far above any real clip: a DSEC second is ~20 M events (~300 MB as arrays), EventGPT's
50 ms windows are a few hundred thousand, and the largest event sensors are ~1 Mpx.

``EVSPEC_MAX_EVENT_BYTES`` (bytes) raises or lowers the events limit for one process.
"""

from __future__ import annotations

import os

from evspec.data.errors import DataError

DEFAULT_MAX_EVENT_BYTES = 2 * 1024**3  # 2 GiB of decoded x, y, t, p arrays per file
MAX_CANVAS_SIDE = 4096  # an event image's width or height, in pixels
MAX_CANVAS_PIXELS = 4096 * 2160  # width * height of one event image (4K UHD)
MAX_PICKLE_DEPTH = 32  # nesting of containers in a research .npy
MAX_PICKLE_NODES = 100_000  # distinct containers and values in a research .npy

_ENV = "EVSPEC_MAX_EVENT_BYTES"


def max_event_bytes() -> int:
    """The decoded-size limit of one events file (``EVSPEC_MAX_EVENT_BYTES`` or 2 GiB)."""
    raw = os.environ.get(_ENV)
    if raw is None or not raw.strip():
        return DEFAULT_MAX_EVENT_BYTES
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(
            f"{_ENV}={raw!r}: must be a whole number of bytes, e.g. 4294967296") from None
    if value <= 0:
        raise ValueError(f"{_ENV}={raw!r}: must be positive")
    return value


def check_event_bytes(source: str, field: str, nbytes: int) -> None:
    """Refuse a file whose decoded events would exceed :func:`max_event_bytes`."""
    limit = max_event_bytes()
    if nbytes > limit:
        raise DataError(
            source,
            field,
            f"decodes to {nbytes:,} bytes, over the {limit:,}-byte limit for one events file; "
            f"split the recording into shorter clips, or raise {_ENV} if it is genuine",
        )


def check_canvas(source: str, width: int, height: int, what: str) -> None:
    """Refuse an event image larger than the stated maximum before it is allocated."""
    if width > MAX_CANVAS_SIDE or height > MAX_CANVAS_SIDE or width * height > MAX_CANVAS_PIXELS:
        raise DataError(
            source,
            "x/y",
            f"{what} would make a {width}x{height} event image, over the {MAX_CANVAS_SIDE}-pixel "
            f"side / {MAX_CANVAS_PIXELS:,}-pixel maximum; give the recording's sensor size, or "
            "drop the stray events far outside it",
        )
