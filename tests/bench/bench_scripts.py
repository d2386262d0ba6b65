"""Loading a benchmark script (``benchmarks/<name>.py``: a folder of scripts, not a package)
as a module in the tests."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def load_script(name: str, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """``benchmarks/<name>.py`` run as module ``name`` for one test: registered in
    ``sys.modules`` (FlexAttention's tracing imports the attention probe by name) and with
    ``benchmarks/`` on ``sys.path`` (the scripts import their siblings, e.g. probe_common),
    both undone after the test."""
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, name, mod)
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    spec.loader.exec_module(mod)
    return mod
