"""benchmarks/gemv_probe.py at tiny size on the CPU: every variant is timed for every shape
and row count, and a rejected configuration is recorded, not fatal."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gemv_probe.py"


def test_tiny_cpu_probe(tmp_path: Path, monkeypatch) -> None:
    spec = importlib.util.spec_from_file_location("gemv_probe", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    monkeypatch.setitem(sys.modules, "gemv_probe", mod)
    monkeypatch.syspath_prepend(str(SCRIPT.parent))  # the script imports its sibling probe_common
    spec.loader.exec_module(mod)
    out = mod.main(["--device", "cpu", "--tiny", "--layers", "2", "--repeats", "2", "--configs", "32x64w4,16x128w4",
                    "--json", str(tmp_path / "g.json")])
    assert set(out["shapes"]) == {"qkv M=1", "qkv M=9", "o M=1", "o M=9"}
    for row in out["shapes"].values():
        for label in ("cublas", "cublas+ops", "triton 32x64w4", "triton 16x128w4"):
            assert row[label]["ms"] > 0 and row[label]["tb_s"] > 0
    assert (tmp_path / "g.json").is_file()
