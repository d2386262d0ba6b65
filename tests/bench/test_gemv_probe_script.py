"""benchmarks/gemv_probe.py at tiny size on the CPU: every variant is timed for every shape
and row count (the down projection through its silu(gate)·up prologue), the sweep covers
every configuration and names the best, and configuration labels parse."""

from __future__ import annotations

from pathlib import Path

from bench_scripts import load_script  # a sibling helper (tests/bench is on sys.path)


def _load(monkeypatch):
    return load_script("gemv_probe", monkeypatch)


def test_tiny_cpu_probe(tmp_path: Path, monkeypatch) -> None:
    mod = _load(monkeypatch)
    out = mod.main(["--device", "cpu", "--tiny", "--layers", "2", "--repeats", "2", "--configs",
                    "default,32x64w4,16x128w4s1", "--json", str(tmp_path / "g.json")])
    assert set(out["shapes"]) == {"qkv M=1", "qkv M=9", "down M=1", "down M=9"}
    for row in out["shapes"].values():
        for label in ("cublas", "cublas+ops", "triton default", "triton 32x64w4", "triton 16x128w4s1"):
            assert row[label]["ms"] > 0 and row[label]["tb_s"] > 0
        assert row["triton default max_err"] < 1e-4  # the fused kernel (or its torch fallback) is right
        assert row["best"] in ("default", "32x64w4", "16x128w4s1")
    assert (tmp_path / "g.json").is_file()


def test_sweep_and_labels(tmp_path: Path, monkeypatch) -> None:
    mod = _load(monkeypatch)
    assert mod.parse_config("8x1024w4s3") == (8, 1024, 4, 3) and mod.parse_config("16x512w8") == (16, 512, 8, None)
    assert all(4096 <= bn * bk <= 16384 for bn, bk, _, _ in map(mod.parse_config, mod.SWEEP))
    out = mod.main(["--device", "cpu", "--tiny", "--layers", "1", "--repeats", "1", "--rows", "1", "--shapes", "qkv",
                    "--sweep", "--no-pdl", "--json", str(tmp_path / "s.json")])
    row = out["shapes"]["qkv M=1"]
    timed = {k for k, v in row.items() if isinstance(v, dict) and "ms" in v}
    assert timed == {"cublas", "cublas+ops", "triton default", "triton default, no PDL",
                     *(f"triton {c}" for c in mod.SWEEP)}
