"""Windows over an event stream (by time, by count) and the window-length warning.

EventGPT was trained on ~50 ms windows (its release refused streams of 100 ms or more);
the research fed it 0.5-20 s windows.  The window length is therefore always an explicit
parameter here, and ``check_window_length`` warns when it is far from the training regime.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

from evspec.data.errors import MEMORY, DataError
from evspec.data.events import EventStream

EVENTGPT_WINDOW_US = 50_000
"""The window length EventGPT was trained on (~50 ms)."""

WINDOW_WARN_LOW_US = EVENTGPT_WINDOW_US // 5  # 10 ms
WINDOW_WARN_HIGH_US = 2 * EVENTGPT_WINDOW_US  # 100 ms: the release refused streams this long


class WindowLengthWarning(UserWarning):
    """An event window far outside EventGPT's ~50 ms training regime."""


def check_window_length(duration_us: int, source: str = MEMORY) -> bool:
    """Warn (``WindowLengthWarning``) when ``duration_us`` is outside [10 ms, 100 ms).

    Returns True when the length is inside the regime.  EventGPT still runs on longer
    windows, but its answers (and hence its acceptance as a drafter) are out of distribution.
    """
    if WINDOW_WARN_LOW_US <= duration_us < WINDOW_WARN_HIGH_US:
        return True
    warnings.warn(
        f"{source}: event window of {duration_us / 1000:.1f} ms is far from EventGPT's "
        f"~{EVENTGPT_WINDOW_US // 1000} ms training windows (expected "
        f"{WINDOW_WARN_LOW_US // 1000}-{WINDOW_WARN_HIGH_US // 1000} ms); "
        "its answers may be out of distribution",
        WindowLengthWarning,
        stacklevel=3,
    )
    return False


_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(us|µs|ms|s)\s*$")
_UNIT_US = {"us": 1, "µs": 1, "ms": 1_000, "s": 1_000_000}


def parse_duration(text: str) -> int:
    """``"500ms"``, ``"1s"``, ``"0.25s"``, ``"50000us"`` -> microseconds (int, > 0)."""
    m = _DURATION_RE.match(str(text))
    if not m:
        raise ValueError(
            f"duration {text!r} not understood; write a number with a unit: "
            "'50ms', '500ms', '1s', '2.5s' or '50000us'"
        )
    value = float(m.group(1)) * _UNIT_US[m.group(2)]
    if value < 1 or value != int(value):
        raise ValueError(f"duration {text!r} must be a positive whole number of microseconds")
    return int(value)


@dataclass(frozen=True)
class TimeWindows:
    """Fixed-length windows ``[t0, t0 + length_us)`` stepping by ``length_us * (1 - overlap)``.

    ``overlap`` is the fraction shared by consecutive windows: 0 (disjoint) <= overlap < 1.
    """

    length_us: int
    overlap: float = 0.0

    def __post_init__(self) -> None:
        if int(self.length_us) <= 0:
            raise ValueError(f"TimeWindows.length_us must be > 0 µs, got {self.length_us}")
        if not 0.0 <= self.overlap < 1.0:
            raise ValueError(
                "TimeWindows.overlap must be in [0, 1) (0.5 = half-overlapping), "
                f"got {self.overlap}"
            )

    @property
    def step_us(self) -> int:
        return max(1, round(self.length_us * (1.0 - self.overlap)))

    def spans(self, t_start: int, t_end: int) -> list[tuple[int, int]]:
        """All windows that fit entirely inside ``[t_start, t_end]``."""
        out: list[tuple[int, int]] = []
        t0 = int(t_start)
        while t0 + self.length_us <= t_end:
            out.append((t0, t0 + self.length_us))
            t0 += self.step_us
        return out

    def over(self, stream: EventStream) -> Iterator[tuple[tuple[int, int], EventStream]]:
        """``((t0, t1), events)`` over the stream's own time range (views, no copies)."""
        if len(stream) == 0:
            return
        first, last = stream.t_range  # type: ignore[misc]
        for t0, t1 in self.spans(first, last + 1):
            yield (t0, t1), stream.window_time(t0, t1)


@dataclass(frozen=True)
class CountWindows:
    """Windows of ``count`` consecutive events, stepping by ``count * (1 - overlap)``."""

    count: int
    overlap: float = 0.0

    def __post_init__(self) -> None:
        if int(self.count) <= 0:
            raise ValueError(f"CountWindows.count must be > 0 events, got {self.count}")
        if not 0.0 <= self.overlap < 1.0:
            raise ValueError(f"CountWindows.overlap must be in [0, 1), got {self.overlap}")

    @property
    def step(self) -> int:
        return max(1, round(self.count * (1.0 - self.overlap)))

    def over(self, stream: EventStream) -> Iterator[EventStream]:
        """Full windows only (a trailing partial window is dropped)."""
        start = 0
        while start + self.count <= len(stream):
            yield stream.window_count(start, self.count)
            start += self.step


def require_nonempty(stream: EventStream, what: str = "events") -> None:
    """Raise a ``DataError`` naming the stream's file when it has no events."""
    if len(stream) == 0:
        raise DataError(stream.source, what, "the event stream is empty (no events in the window)")
