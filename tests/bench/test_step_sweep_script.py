"""benchmarks/step_sweep.py at tiny size on the CPU (torch layers: the tiny preset's heads
are too small for the Triton layer): every variant is timed (decode chains and score
steps), the best phase picks a label per kernel, and the modules' tables are restored."""

from __future__ import annotations

from pathlib import Path

import pytest
from bench_scripts import load_script  # a sibling helper (tests/bench is on sys.path)

from evspec.models.fast import decode_attention, gemv, triton_layer


@pytest.fixture
def step_sweep(monkeypatch):
    return load_script("step_sweep", monkeypatch)


def _tables() -> tuple:
    return (dict(gemv.DECODE_CONFIGS), dict(gemv.SCORE_CONFIGS), dict(decode_attention.STEP_CONFIGS), gemv.ROW_VEC,
            triton_layer.STEP_ROWS, triton_layer.DECODE_HEAD_COLUMNS, triton_layer.SCORE_HEAD_COLUMNS)


def test_apply_sets_each_table(step_sweep) -> None:
    before = _tables()
    restore = step_sweep.snapshot()
    try:
        step_sweep.apply("qkv", "2048w8s1/c8")
        assert gemv.DECODE_CONFIGS[(12288, 4096)] == (8, 2048, 8, 1) and triton_layer.DECODE_HEAD_COLUMNS == 8
        step_sweep.apply("down", "16x512w4s3")
        assert gemv.DECODE_CONFIGS[(4096, 11008)] == (16, 512, 4, 3)
        step_sweep.apply("attention", "132,128,8,2")
        assert decode_attention.STEP_CONFIGS["one"] == (132, 128, 8, 2)
        step_sweep.apply("vec", "1")
        assert gemv.ROW_VEC == 1
        step_sweep.apply("mqkv", "256w4s3/c16")
        assert gemv.SCORE_CONFIGS[(12288, 4096)] == (8, 256, 4, 3) and triton_layer.SCORE_HEAD_COLUMNS == 16
        step_sweep.apply("mgate_up", "16x512w4s3")
        assert gemv.SCORE_CONFIGS[(22016, 4096)] == (16, 512, 4, 3)
        step_sweep.apply("layer", "triton")
        assert triton_layer.STEP_ROWS == 16
        assert _tables() != before
    finally:
        restore()
    assert _tables() == before


def test_tiny_sweep_times_every_variant(step_sweep, tmp_path: Path) -> None:
    before = _tables()
    out = step_sweep.main(["--preset", "tiny-random", "--device", "cpu", "--kernels", "torch", "--only", "vec,o",
                           "--steps", "3", "--repeats", "1", "--check", "3", "--ab", "1",
                           "--json", str(tmp_path / "s.json")])
    assert set(out["one"]) == {"vec", "o"}
    assert set(out["one"]["o"]) == set(step_sweep.VARIANTS["o"][1:])
    assert all(r["ms_per_token"] > 0 and r["same_ids"] == 3 for r in out["one"]["o"].values())  # torch layers
    best = out["best"]["config"]
    assert best["o"] in step_sweep.VARIANTS["o"] and best["qkv"] == step_sweep.VARIANTS["qkv"][0]
    assert len(out["best"]["best_ms"]) == len(out["best"]["shipped_ms"]) == 1
    assert _tables() == before
    assert (tmp_path / "s.json").exists()


def test_tiny_score_sweep_times_score_steps(step_sweep, tmp_path: Path) -> None:
    before = _tables()
    out = step_sweep.main(["--preset", "tiny-random", "--device", "cpu", "--kernels", "torch", "--rows", "5",
                           "--only", "mo", "--repeats", "1", "--ab", "1", "--json", str(tmp_path / "s.json")])
    assert out["rows"] == 5 and out["shipped"]["config"]["layer"] == "triton"
    assert len(out["shipped"]["ids"]) == 5  # the argmax of every scored row
    assert all(r["ms"] > 0 and r["same_ids"] == 5 for r in out["one"]["mo"].values())
    assert _tables() == before
