"""Every Triton kernel of the fast engine compiles for Hopper (sm_90) with the constexpr
combinations the engine launches, on any machine that has Triton: the compiler runs on the
CPU, no GPU needed.  ``TRITON_INTERPRET=1`` runs the kernels' Python, which accepts code the
compiler rejects (e.g. code after a constexpr-true ``return``), so the CPU tests alone miss
such errors.  Skipped where Triton is not installed (CI)."""

from __future__ import annotations

import pytest

triton = pytest.importorskip("triton")
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

from evspec.models.fast import decode_attention, gemv, triton_layer  # noqa: E402

HOPPER = GPUTarget("cuda", 90, 32)


def _compile(kernel, types: dict[str, str], consts: dict[str, object], num_warps: int = 4):
    """``kernel`` compiled to a cubin: ``types`` for the runtime arguments (in order), the
    rest constexpr."""
    names = kernel.arg_names
    assert set(names) == set(types) | set(consts), set(names) ^ (set(types) | set(consts))
    sig = {n: types.get(n, "constexpr") for n in names}
    return triton.compile(ASTSource(kernel, sig, constexprs=consts), target=HOPPER,
                          options={"num_warps": num_warps})


def _types(ptrs: str, ints: str = "", floats: str = "", dtype: str = "bf16") -> dict[str, str]:
    t = {p: f"*{dtype}" for p in ptrs.split()}
    t.update({i: "i32" for i in ints.split()})
    t.update({f: "fp32" for f in floats.split()})
    return t


@pytest.mark.parametrize(("block_m", "norm", "act", "res", "even", "pdl", "dtype"), [
    (1, True, False, False, True, True, "bf16"),  # q/k/v, gate/up in a decode step
    (1, False, False, True, False, True, "bf16"),  # o, ragged
    (1, False, True, True, True, False, "bf16"),  # down: silu(gate) * up prologue
    (16, True, False, True, True, True, "bf16"),  # a score step: tl.dot
    (16, False, True, True, False, False, "fp32"),
])
def test_fused_linear_compiles(block_m, norm, act, res, even, pdl, dtype) -> None:
    types = _types("X W NW RES Y", "M N stride_xm stride_wn stride_rm stride_ym", "eps",
                   "fp32" if dtype == "fp32" else "bf16")
    consts = dict(K=4096, HAS_NORM=norm, HAS_ACT=act, HAS_RES=res, IEEE=dtype == "fp32", EVEN=even,
                  NUM_STAGES=3, PDL=pdl, BLOCK_M=block_m, BLOCK_N=16, BLOCK_K=512, VEC=8 if block_m == 1 else 1)
    assert "cubin" in _compile(gemv._fused_linear, types, consts).asm


@pytest.mark.parametrize(("block_m", "split", "pdl"), [(1, 16, True), (16, 2, True), (16, 1, False)])
def test_qkv_rope_cache_compiles(block_m: int, split: int, pdl: bool) -> None:
    types = _types("X NW W COS SIN Q KC VC", "T stride_x stride_w stride_cs stride_qh stride_qt stride_ch stride_cr",
                   "eps")
    types["POS"] = "*i64"
    consts = dict(K=4096, D=128, HQ=32, HKV=32, SPLIT=split, IEEE=False, NUM_STAGES=1 if block_m == 1 else 3,
                  PDL=pdl, EVEN_K=True, BLOCK_M=block_m, BLOCK_K=1024 if block_m == 1 else 128,
                  VEC=8 if block_m == 1 else 1)
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
    consts2 = dict(T=t, GROUPS=1, SPLITS=8, D=128, BLOCK_M=block_m, BLOCK_S=8, PDL=pdl)
    assert "cubin" in _compile(decode_attention._stage2, types2, consts2).asm
