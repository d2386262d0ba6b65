"""Polarity conventions: how event files that do not store polarity as {0, 1} map onto it.

evspec stores polarity as uint8 0 (OFF, brightness down) / 1 (ON, up), and
:class:`~evspec.data.events.EventStream` refuses anything else with a clear error.  Files in
other conventions load through a named mapping (``polarity=`` of
:func:`~evspec.data.clipio.load_events`):

* ``"binary"`` -- the values must already be 0 or 1 (the default: nothing is guessed);
* ``"release"`` -- 0 stays 0, **every other value** becomes 1: exactly how the EventGPT
  release paints (polarity 0 blue, anything else red), so ``{-1, 1}`` data renders all red,
  as the release renders it;
* ``"signed"`` -- ``p > 0`` becomes 1, everything else 0: ``{-1, 1}`` (or ``{-1, 0, 1}``)
  with -1 meaning OFF, painted blue -- the physical reading, not the release's.
"""

from __future__ import annotations

import numpy as np

from evspec.data.errors import DataError

POLARITY_CONVENTIONS = ("binary", "release", "signed")


def map_polarity(p: object, convention: str = "binary", source: str = "<memory>") -> object:
    """``p`` mapped onto {0, 1} by ``convention`` (uint8 ``[N]``); ``"binary"`` returns ``p``
    untouched for :class:`~evspec.data.events.EventStream` to check."""
    if convention not in POLARITY_CONVENTIONS:
        raise ValueError(
            f"polarity convention must be one of {', '.join(POLARITY_CONVENTIONS)}, "
            f"got {convention!r}"
        )
    if convention == "binary":
        return p
    arr = np.asarray(p)
    if arr.dtype.kind not in "biuf":
        raise DataError(source, "p", f"polarity must be numeric, got dtype {arr.dtype}")
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise DataError(source, "p", "polarity holds NaN or infinity")
    on = arr != 0 if convention == "release" else arr > 0
    return on.astype(np.uint8)
