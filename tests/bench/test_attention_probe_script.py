"""benchmarks/attention_probe.py at tiny size on the CPU: every kernel agrees with the matmul
reference in float32 and is timed for each step size."""

from __future__ import annotations

from pathlib import Path

import pytest
from bench_scripts import load_script  # a sibling helper (tests/bench is on sys.path)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_tiny_cpu_probe(tmp_path: Path, monkeypatch) -> None:
    mod = load_script("attention_probe", monkeypatch)
    out = mod.main(["--device", "cpu", "--layers", "2", "--rows", "128", "--position", "100", "--heads", "4",
                    "--dim", "16", "--queries", "1,5", "--repeats", "2", "--json", str(tmp_path / "a.json")])
    assert set(out["results"]) == {"sdpa", "matmul", "flex", "splitkv"}
    for kind, r in out["results"].items():
        for t in (1, 5):
            assert r[f"T{t}_max_err_fp32"] < 1e-5, kind
            assert r[f"T{t}_ms"] > 0 and r[f"T{t}_gb_s"] > 0
    assert (tmp_path / "a.json").is_file()
    with pytest.raises(SystemExit):
        mod.main(["--device", "cpu", "--rows", "64", "--position", "60", "--queries", "9"])


def test_split_kv_sweep_on_the_cpu(tmp_path: Path, monkeypatch) -> None:
    """``--splitkv-sweep --kinds splitkv``: only those kinds run, every launch
    configuration is checked (the torch reference without Triton) and timed."""
    mod = load_script("attention_probe", monkeypatch)
    out = mod.main(["--device", "cpu", "--layers", "1", "--rows", "128", "--position", "100", "--heads", "2",
                    "--dim", "16", "--queries", "1", "--repeats", "1", "--splitkv-sweep", "--kinds", "matmul,splitkv",
                    "--json", str(tmp_path / "s.json")])
    want = {"matmul", "splitkv", *(f"splitkv b{b}n{n}w{w}s{s}" for b, n, w, s in mod.SPLITKV_SWEEP)}
    assert set(out["results"]) == want
    assert all(r["T1_max_err_fp32"] < 1e-5 and r["T1_ms"] > 0 for r in out["results"].values())
