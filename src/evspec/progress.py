"""Progress bars that stay out of logs: drawn only on a terminal, never when asked not to.

Every tqdm bar in evspec takes ``disable=bar_disable(progress)``: ``True`` (no bar) when the
caller's ``progress`` is off or ``$EVSPEC_NO_PROGRESS`` is set (``evspec --no-progress``),
else ``None``, with which tqdm draws only when its stream is a terminal (no ``\\r`` lines in a
redirected log).
"""

from __future__ import annotations

import os

#: set (to anything but "" or "0") to turn every progress bar off
NO_PROGRESS_ENV = "EVSPEC_NO_PROGRESS"


def bar_disable(progress: bool = True) -> bool | None:
    """tqdm's ``disable`` argument for a bar the caller wants when ``progress``."""
    if not progress or os.environ.get(NO_PROGRESS_ENV, "") not in ("", "0"):
        return True
    return None
