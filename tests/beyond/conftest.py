"""Fixtures for the issue-8 tests; the engine's test doubles are imported from
``tests/decoding/engine_doubles.py``."""

from __future__ import annotations

import sys
from pathlib import Path

_DECODING_TESTS = Path(__file__).resolve().parents[1] / "decoding"
if str(_DECODING_TESTS) not in sys.path:
    sys.path.insert(0, str(_DECODING_TESTS))
