"""Every Triton kernel of the fast engine compiles for Hopper (sm_90) with the constexpr
combinations the engine launches, on any machine that has Triton: the compiler runs on the
CPU, no GPU needed.  ``TRITON_INTERPRET=1`` runs the kernels' Python, which accepts code the
compiler rejects (e.g. code after a constexpr-true ``return``), so the CPU tests alone miss
such errors.  Skipped where Triton is not installed; under ``TRITON_INTERPRET=1`` they run in a
child process without it."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

#: set by tests/conftest.py on a machine without CUDA: ``triton.jit`` then makes interpreter
#: functions, which do not compile, so the compile tests run in a child process without it
INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"

triton = pytest.importorskip("triton")
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

from evspec.models.fast import decode_attention, gemv, triton_layer  # noqa: E402

HOPPER = GPUTarget("cuda", 90, 32)


@pytest.mark.skipif(not INTERPRETED, reason="the compile tests run in this process")
def test_the_kernels_compile_in_a_process_without_the_interpreter() -> None:
    env = {**os.environ, "TRITON_INTERPRET": "0"}
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]


def _compile(kernel, types: dict[str, str], consts: dict[str, object], num_warps: int = 4):
    """``kernel`` compiled to a cubin: ``types`` for the runtime arguments (in order), the
    rest constexpr."""
    if INTERPRETED:
        pytest.skip("compiled in a child process (the test above)")
    names = kernel.arg_names
    assert set(names) == set(types) | set(consts), set(names) ^ (set(types) | set(consts))
    sig = {n: types.get(n, "constexpr") for n in names}
    return triton.compile(ASTSource(kernel, sig, constexprs=consts), target=HOPPER,
                          options={"num_warps": num_warps, "enable_fp_fusion": False})


def _types(ptrs: str, ints: str = "", floats: str = "", dtype: str = "bf16") -> dict[str, str]:
    t = {p: f"*{dtype}" for p in ptrs.split()}
    t.update({i: "i32" for i in ints.split()})
    t.update({f: "fp32" for f in floats.split()})
    return t


@pytest.mark.parametrize(("block_m", "norm", "act", "res", "even", "pdl", "dtype", "block_k"), [
    (1, True, False, False, True, True, "bf16", 512),  # q/k/v, gate/up in a decode step
    (1, False, True, True, False, False, "bf16", 512),  # down: silu(gate) * up prologue, ragged
    (16, True, False, True, True, True, "bf16", 512),  # a score step: the same per-row FMA chains
    (4, False, True, True, False, False, "fp32", 256),
])
def test_fused_linear_compiles(block_m, norm, act, res, even, pdl, dtype, block_k) -> None:
    types = _types("X W NW RES Y", "M N stride_xm stride_wn stride_rm stride_ym", "eps", dtype)
    consts = dict(K=4096, HAS_NORM=norm, HAS_ACT=act, HAS_RES=res, EVEN=even, NUM_STAGES=3, PDL=pdl,
                  BLOCK_M=block_m, BLOCK_N=16 if block_m == 1 else 4, BLOCK_K=block_k, VEC=8,
                  LOG2_J=(block_k // 8).bit_length() - 1)
    compiled = _compile(gemv._fused_linear, types, consts, num_warps=4 if block_m == 1 else 8)
    assert "cubin" in compiled.asm


@pytest.mark.parametrize(("block_m", "split", "pdl"),
                         [(1, 16, True), (16, 32, True), (4, 1, False)])
def test_qkv_rope_cache_compiles(block_m: int, split: int, pdl: bool) -> None:
    types = _types("X NW W COS SIN Q KC VC", "T stride_x stride_w stride_cs stride_qh stride_qt stride_ch stride_cr",
                   "eps")
    types["POS"] = "*i64"
    consts = dict(K=4096, D=128, HQ=32, HKV=32, SPLIT=split, NUM_STAGES=1 if block_m == 1 else 2,
                  PDL=pdl, EVEN_K=True, BLOCK_M=block_m, BLOCK_K=512, VEC=8, LOG2_J=6)
    assert "cubin" in _compile(triton_layer._qkv_rope_cache, types, consts).asm


@pytest.mark.parametrize(("t", "pdl", "block_n"), [(1, True, 64), (9, True, 64), (1, False, 128), (9, False, 32)])
def test_split_kv_stages_compile(t: int, pdl: bool, block_n: int) -> None:
    types = _types("Q K V", "kv_rows stride_qh stride_qt stride_kh stride_kn stride_vh stride_vn", "scale")
    types.update(POS="*i64", O_PART="*fp32", LSE="*fp32")
    block_m = 16
    consts = dict(T=t, GROUPS=1, SPLITS=8, D=128, CHUNK=256, BLOCK_M=block_m, BLOCK_N=block_n, IEEE=False, PDL=pdl)
    assert "cubin" in _compile(decode_attention._stage1, types, consts).asm
    types2 = _types("OUT", "stride_oh stride_ot")
    types2.update(O_PART="*fp32", LSE="*fp32")
    consts2 = dict(T=t, GROUPS=1, SPLITS=8, D=128, BLOCK_M=block_m, PDL=pdl)
    assert "cubin" in _compile(decode_attention._stage2, types2, consts2).asm
