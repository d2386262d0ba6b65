"""benchmarks/fast_profile.py at tiny size on the CPU: the per-step breakdown adds up."""

from __future__ import annotations

from pathlib import Path

import pytest
from bench_scripts import load_script  # a sibling helper (tests/bench is on sys.path)


@pytest.fixture
def fast_profile(monkeypatch):
    return load_script("fast_profile", monkeypatch)


def test_kernel_families(fast_profile) -> None:
    f = fast_profile.family
    assert f("sm90_xmma_gemm_bf16bf16_bf16f32") == "matmul"
    assert f("void flash_fwd_splitkv_kernel<...>") == "attention"
    assert f("aten::argmax") == "sampling"
    assert f("triton_red_fused_rms_norm_0") == "norm/rope/elementwise"
    assert f("triton_red_fused__to_copy_add_mean_mul_pow_rsqrt_1") == "norm/rope/elementwise"
    assert f("triton_red_fused_argmax_2") == "sampling"
    assert f("Memcpy DtoD (Device -> Device)") == "copy"


def test_tiny_cpu_profile_adds_up(fast_profile, tmp_path: Path) -> None:
    out = fast_profile.main(["--preset", "tiny-random", "--device", "cpu", "--steps", "2", "--top", "5",
                             "--json", str(tmp_path / "p.json")])
    (mode, r), = out["modes"].items()
    assert r["wall_ms"] > 0 and 0 < r["kernel_ms"]
    assert abs(sum(r["families_ms"].values()) - r["kernel_ms"]) < 1e-6
    assert len(r["top_kernels_ms"]) <= 5 and r["weight_bytes"] > 0
    assert (tmp_path / "p.json").is_file()
