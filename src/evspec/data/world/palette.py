"""Object colours whose luminance is set exactly, so hue is invisible to the event camera.

An event camera sees only luminance ``Y = w . rgb`` with Rec. 601 weights ``w``.  Each
named colour keeps its hue but is moved to one of two luminance levels:
``rgb = Y + k (c - w . c)`` where ``c`` is the nominal hue and ``k`` the largest saturation
(at most 1) that stays inside ``[0, 1]``.  Since ``w . (c - w . c) = 0`` (the weights sum
to 1), every colour of a level has luminance exactly ``Y``: red and blue objects of the same
level produce identical events, while the two levels differ (colour is only *partially*
visible through brightness, as in a real sensor).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from evspec.data.world.tables import COLOUR_HUES, LUMINANCE_LEVELS

# Rec. 601 luma weights (sum to 1).
LUMA_WEIGHTS = np.array([0.299, 0.587, 0.114], dtype=np.float64)


@dataclass(frozen=True)
class Colour:
    """A named colour: ``rgb`` in ``[0, 1]`` and its ``luminance`` (= ``LUMA_WEIGHTS . rgb``)."""

    name: str
    rgb: tuple[float, float, float]
    luminance: float
    level: int


def luminance(rgb: np.ndarray) -> np.ndarray:
    """``[..., 3]`` linear RGB -> ``[...]`` luminance."""
    return np.asarray(rgb, dtype=np.float64) @ LUMA_WEIGHTS


def colour_at_luminance(hue: tuple[float, float, float], target: float) -> np.ndarray:
    """The most saturated colour of hue ``hue`` (capped at the nominal one) with luminance
    ``target``.  Returns ``[3]`` float64 in ``[0, 1]``."""
    if not 0.0 < target < 1.0:
        raise ValueError(f"luminance level must be in (0, 1), got {target}")
    c = np.asarray(hue, dtype=np.float64)
    chroma = c - float(c @ LUMA_WEIGHTS)  # [3], zero luminance
    k = 1.0
    for ch in chroma:
        if ch > 0:
            k = min(k, (1.0 - target) / ch)
        elif ch < 0:
            k = min(k, target / -ch)
    return np.clip(target + k * chroma, 0.0, 1.0)


@lru_cache(maxsize=1)
def palette() -> dict[str, Colour]:
    """All named colours of :data:`~evspec.data.world.tables.COLOUR_HUES`."""
    out: dict[str, Colour] = {}
    for name, (hue, level) in COLOUR_HUES.items():
        rgb = colour_at_luminance(hue, LUMINANCE_LEVELS[level])
        out[name] = Colour(
            name=name,
            rgb=(float(rgb[0]), float(rgb[1]), float(rgb[2])),
            luminance=LUMINANCE_LEVELS[level],
            level=level,
        )
    return out
