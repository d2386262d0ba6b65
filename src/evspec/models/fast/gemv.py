"""Skinny matrix products (a few token rows) with the layer's elementwise work folded in.

A decode step is weight-bandwidth bound: on the H200 its GEMVs read 13.5 GB at 3.76 TB/s
(benchmarks/fast_engine.md), and everything between them — the RMSNorm before
q/k/v and gate/up, the residual adds after o and down, cuBLAS's split-K reductions — adds
kernels, and each kernel a launch gap.  :func:`fused_linear` computes

    y = linear(norm(x)) [+ residual]        norm(x) = weight_n * (x * rsqrt(mean(x^2) + eps))
    y = linear(silu(gate) * up) [+ residual]    (``gated_silu``: x is the fused [gate | up])

in one kernel: every program recomputes the rows' inverse RMS from ``x`` (a few KB, read
from L2), normalises its slice of ``x`` on the fly with the transformers rounding points
(float32, cast to the activation dtype, times the norm weight) and adds the residual in the
epilogue (the product rounded to the activation dtype first, as ``x + o_proj(...)`` does).
On CUDA with Triton it is a Triton kernel; elsewhere :func:`fused_linear_reference` is the
same computation in torch.  The kernel is row-invariant: each row's products are summed as a
chain of float32 FMAs in an order written in the code (:func:`accumulate`, then a fixed
pairwise tree, :func:`tree_sum`), which depends on ``BLOCK_K`` and ``VEC`` but not on the
number of rows, the block of output columns, the warps or Triton's layouts; every step takes
the one-row ``BLOCK_K``, so a row of a 9-token score equals the same row in a decode step bit
for bit, and the weight tile is read once for all rows (no ``tl.dot``: no padding to 16 rows).
Launch configurations per 7B shape come from an H200 sweep (:data:`DECODE_CONFIGS`); on
Hopper the first weight tile is read before waiting on the previous kernel (programmatic
dependent launch, ``triton_support.pdl``).  The engine's Triton layer (``triton_layer.py``)
runs it for o, gate/up and down; ``benchmarks/gemv_probe.py`` times it against cuBLAS.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from evspec.models.fast.ops import gated, rms_norm
from evspec.models.fast.triton_support import available, pdl, pdl_release, pdl_wait, row_rstd, tl, triton

#: the most token rows one call takes (decode and score steps)
MAX_ROWS = 16


def fused_linear_reference(
    x: torch.Tensor,  # [M, K], or [M, 2K] with gated_silu
    weight: torch.Tensor,  # [N, K]
    norm_weight: torch.Tensor | None = None,  # [K]
    eps: float = 1e-6,
    residual: torch.Tensor | None = None,  # [M, N]
    *,
    gated_silu: bool = False,
) -> torch.Tensor:
    """What :func:`fused_linear` computes, as separate torch ops (the HF rounding points)."""
    if gated_silu:
        x = gated("silu", x)
    h = x if norm_weight is None else rms_norm(x, norm_weight, eps)
    y = F.linear(h, weight)
    return y if residual is None else residual + y


if triton is not None:

    @triton.jit
    def w_tile(W, n, n_ok, k, k_ok, stride_wn, EVEN: tl.constexpr):
        """Weight rows ``n``, columns ``k`` (read once: kept out of L2's way)."""
        if EVEN:
            wk = tl.load(W + n[:, None] * stride_wn + k[None, :], eviction_policy="evict_first")
        else:
            wk = tl.load(W + n[:, None] * stride_wn + k[None, :], mask=n_ok[:, None] & k_ok[None, :], other=0.0,
                         eviction_policy="evict_first")
        return wk

    @triton.jit
    def rounded(x, like):
        """Float32 ``x`` rounded to ``like``'s dtype and widened again.  The kernels do their
        elementwise math in float32 and round where torch rounds: for +, -, ×, / of bf16 or
        fp16 operands this equals the operation in that dtype (float32 carries more than
        2p + 2 bits), and Triton's interpreter, which runs the CPU tests, has no bf16
        arithmetic of its own."""
        return x.to(like.dtype).to(tl.float32)

    @triton.jit
    def x_tile(X, NW, rstd, m, m_ok, k, k_ok, stride_xm, K: tl.constexpr,
               HAS_NORM: tl.constexpr, HAS_ACT: tl.constexpr):
        """Columns ``k`` of the GEMV's input as float32 values of the activation dtype: ``x``,
        ``silu(gate) * up`` or the normed ``x``, each rounded where torch rounds."""
        x_mask = m_ok[:, None] & k_ok[None, :]
        xk = tl.load(X + m[:, None] * stride_xm + k[None, :], mask=x_mask, other=0.0)
        x32 = xk.to(tl.float32)
        if HAS_ACT:  # X holds [gate | up] (2K wide)
            up = tl.load(X + m[:, None] * stride_xm + K + k[None, :], mask=x_mask, other=0.0)
            x32 = rounded(rounded(x32 / (1.0 + tl.exp(-x32)), xk) * up.to(tl.float32), xk)
        if HAS_NORM:
            nw = tl.load(NW + k, mask=k_ok, other=0.0)
            x32 = rounded(rounded(x32 * rstd[:, None], nw) * nw.to(tl.float32)[None, :], nw)
        return x32

    @triton.jit
    def split8(t):
        """``t`` ``[R, BK]`` -> eight ``[R, BK / 8]`` tensors, part ``v`` holding columns
        ``8 j + v`` (a fixed order of parts: 0, 1, ..., 7)."""
        R: tl.constexpr = t.shape[0]
        J: tl.constexpr = t.shape[1] // 8
        even, odd = tl.split(tl.reshape(t, [R, J, 4, 2]))  # columns 8j + {0,2,4,6} / {1,3,5,7}
        e04, e26 = tl.split(tl.reshape(even, [R, J, 2, 2]))
        o15, o37 = tl.split(tl.reshape(odd, [R, J, 2, 2]))
        p0, p4 = tl.split(e04)
        p2, p6 = tl.split(e26)
        p1, p5 = tl.split(o15)
        p3, p7 = tl.split(o37)
        return p0, p1, p2, p3, p4, p5, p6, p7

    @triton.jit
    def accumulate(acc, xk, wk, VEC: tl.constexpr):
        """``acc[m, n, j] += sum_v w[n, VEC j + v] x[m, VEC j + v]`` as a chain of float32 FMAs in
        the order v = 0 .. VEC - 1 (``acc`` ``[BLOCK_M, BLOCK_N, BLOCK_K / VEC]``, ``xk``
        ``[BLOCK_M, BLOCK_K]``, ``wk`` ``[BLOCK_N, BLOCK_K]``).  Every element's arithmetic is
        written out: it depends on ``BLOCK_K`` and ``VEC`` only, not on the number of rows,
        ``BLOCK_N``, the warps or how Triton lays the tensors out — the row invariance of the
        kernels (a row's result is the same in a step of 1 or 16 rows).  The weight tile is
        read once for all rows."""
        w32 = wk.to(tl.float32)
        x32 = xk  # float32 (x_tile)
        if VEC == 8:
            w0, w1, w2, w3, w4, w5, w6, w7 = split8(w32)
            x0, x1, x2, x3, x4, x5, x6, x7 = split8(x32)
            acc = tl.fma(w0[None, :, :], x0[:, None, :], acc)
            acc = tl.fma(w1[None, :, :], x1[:, None, :], acc)
            acc = tl.fma(w2[None, :, :], x2[:, None, :], acc)
            acc = tl.fma(w3[None, :, :], x3[:, None, :], acc)
            acc = tl.fma(w4[None, :, :], x4[:, None, :], acc)
            acc = tl.fma(w5[None, :, :], x5[:, None, :], acc)
            acc = tl.fma(w6[None, :, :], x6[:, None, :], acc)
            acc = tl.fma(w7[None, :, :], x7[:, None, :], acc)
        else:
            acc = tl.fma(w32[None, :, :], x32[:, None, :], acc)
        return acc

    @triton.jit
    def tree_sum(acc, LOG2: tl.constexpr):
        """``acc`` ``[A, B, 2**LOG2]`` summed over its last axis as a fixed pairwise tree
        (neighbours first): the order is in the code, not in Triton's layout of ``acc``."""
        A: tl.constexpr = acc.shape[0]
        B: tl.constexpr = acc.shape[1]
        for i in tl.static_range(LOG2):
            lo, hi = tl.split(tl.reshape(acc, [A, B, (1 << (LOG2 - i - 1)), 2]))
            acc = lo + hi
        return tl.reshape(acc, [A, B])

    @triton.jit
    def _fused_linear(X, W, NW, RES, Y, M, N, eps,
                      stride_xm, stride_wn, stride_rm, stride_ym,
                      K: tl.constexpr, HAS_NORM: tl.constexpr, HAS_ACT: tl.constexpr, HAS_RES: tl.constexpr,
                      EVEN: tl.constexpr, NUM_STAGES: tl.constexpr, PDL: tl.constexpr,
                      BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                      VEC: tl.constexpr, LOG2_J: tl.constexpr):
        # EVEN: N and K divide the blocks.  PDL: the first weight tile is read before waiting
        # for the previous kernel (triton_support.pdl); everything else after.
        pdl_release(PDL)
        pid = tl.program_id(0)
        m = tl.arange(0, BLOCK_M)
        n = pid * BLOCK_N + tl.arange(0, BLOCK_N)
        m_ok = m < M
        n_ok = n < N
        k = tl.arange(0, BLOCK_K)
        w0 = w_tile(W, n, n_ok, k, k < K, stride_wn, EVEN)
        pdl_wait(PDL)
        rstd = tl.zeros([BLOCK_M], tl.float32)
        if HAS_NORM:
            rstd = row_rstd(X, stride_xm, m, m_ok, eps, K, BLOCK_M)
        acc = tl.zeros([BLOCK_M, BLOCK_N, BLOCK_K // VEC], tl.float32)
        x0 = x_tile(X, NW, rstd, m, m_ok, k, k < K, stride_xm, K, HAS_NORM, HAS_ACT)
        acc = accumulate(acc, x0, w0, VEC)
        for k0 in tl.range(BLOCK_K, K, BLOCK_K, num_stages=NUM_STAGES):
            k = k0 + tl.arange(0, BLOCK_K)
            k_ok = k < K
            xk = x_tile(X, NW, rstd, m, m_ok, k, k_ok, stride_xm, K, HAS_NORM, HAS_ACT)
            acc = accumulate(acc, xk, w_tile(W, n, n_ok, k, k_ok, stride_wn, EVEN), VEC)
        y = tree_sum(acc, LOG2_J).to(Y.dtype.element_ty)  # [BLOCK_M, BLOCK_N]
        if HAS_RES:
            ok = m_ok[:, None] & n_ok[None, :]
            r = tl.load(RES + m[:, None] * stride_rm + n[None, :], mask=ok, other=0.0)
            y = (r.to(tl.float32) + y.to(tl.float32)).to(Y.dtype.element_ty)
        tl.store(Y + m[:, None] * stride_ym + n[None, :], y, mask=m_ok[:, None] & n_ok[None, :])

else:  # pragma: no cover - depends on the install
    w_tile = x_tile = accumulate = split8 = tree_sum = rounded = None


#: one-row launch configurations (BLOCK_N, BLOCK_K, num_warps, num_stages) by weight shape
#: (N, K) for the LLaMA-7B projections; other shapes take DECODE_DEFAULT.  ``BLOCK_K`` fixes
#: every step's summation order (:func:`accumulate`); 512 keeps the FMA-chain kernels free of
#: register spills for 1 to 16 rows (ptxas, sm_90: 44 registers one row, 128 sixteen);
#: ``benchmarks/step_sweep.py`` re-tunes the rest on a GPU.
DECODE_CONFIGS = {
    (12288, 4096): (8, 512, 4, 3),  # q/k/v
    (4096, 4096): (8, 512, 4, 3),  # o
    (22016, 4096): (8, 512, 4, 3),  # gate/up
    (4096, 11008): (8, 512, 4, 3),  # down
}
DECODE_DEFAULT = (8, 512, 4, 3)
#: one-row GEMVs sum this many neighbouring products per thread before accumulating
#: (:func:`accumulate`); 1: a ``[BLOCK_N, BLOCK_K]`` float32 accumulator
ROW_VEC = 8


#: launch configurations of steps of 2 .. MAX_ROWS rows by weight shape: ``(BLOCK_N, BLOCK_K,
#: num_warps, num_stages)`` of which ``BLOCK_K`` is not used: a row's summation order depends on
#: ``BLOCK_K`` and ``VEC``, so every step takes the one-row configuration's (row invariance:
#: :func:`accumulate`); other shapes take SCORE_DEFAULT
SCORE_CONFIGS: dict[tuple[int, int], tuple[int, int, int, int]] = {}
SCORE_DEFAULT = (4, 0, 8, 2)


def launch_config(m: int, n: int, k: int) -> tuple[int, int, int, int]:
    """``(BLOCK_N, BLOCK_K, num_warps, num_stages)`` for ``m`` rows of an ``n`` × ``k`` weight;
    ``BLOCK_K`` is the one-row configuration's whatever ``m`` (see :data:`SCORE_CONFIGS`)."""
    one = DECODE_CONFIGS.get((n, k), DECODE_DEFAULT)
    if m == 1:
        return one
    bn, _, warps, stages = SCORE_CONFIGS.get((n, k), SCORE_DEFAULT)
    return bn, one[1], warps, stages


def row_vec(m: int, block_k: int) -> int:
    """The ``VEC`` of :func:`accumulate` in blocks of ``block_k`` columns: :data:`ROW_VEC`
    where it divides ``block_k`` (the same for every number of rows ``m``: row invariance)."""
    return ROW_VEC if ROW_VEC == 8 and block_k % 8 == 0 else 1


def block_rows(m: int) -> int:
    """Rows one program holds: ``m`` rounded up to a power of two (a row's arithmetic does not
    depend on it)."""
    return 1 << max(0, (m - 1).bit_length())


def fused_linear(
    x: torch.Tensor,  # [M, K], M <= MAX_ROWS
    weight: torch.Tensor,  # [N, K]
    norm_weight: torch.Tensor | None = None,
    eps: float = 1e-6,
    residual: torch.Tensor | None = None,
    *,
    gated_silu: bool = False,
    block_n: int | None = None,
    block_k: int | None = None,
    num_warps: int | None = None,
    num_stages: int | None = None,
    backend: str = "auto",
    use_pdl: bool | None = None,
) -> torch.Tensor:
    """``[M, N]``: ``linear(norm(x)) [+ residual]`` in one kernel (see the module docstring).
    ``gated_silu``: ``x`` is the fused ``[gate | up]`` output ``[M, 2K]`` and the kernel
    feeds ``silu(gate) * up`` (the MLP's down projection);
    ``block_n``/``block_k``/``num_warps``/``num_stages``: the Triton launch configuration
    (default: :func:`launch_config`);
    ``backend``: ``triton``, ``torch`` (:func:`fused_linear_reference`) or ``auto``;
    ``use_pdl``: programmatic dependent launch (default: :func:`~.triton_support.pdl`)."""
    if backend not in ("auto", "triton", "torch"):
        raise ValueError(f"backend must be auto, triton or torch, got {backend!r}")
    m, k = x.shape
    if gated_silu:  # x is the fused gate/up output [M, 2K]
        if k % 2 or norm_weight is not None:
            raise ValueError("gated_silu takes the fused [gate | up] output (an even width) and no norm")
        k //= 2
    n = weight.shape[0]
    if weight.shape[1] != k or (norm_weight is not None and norm_weight.shape != (k,)):
        raise ValueError(f"shapes do not chain: x {tuple(x.shape)}, weight {tuple(weight.shape)}, "
                         f"norm {None if norm_weight is None else tuple(norm_weight.shape)}")
    if residual is not None and residual.shape != (m, n):
        raise ValueError(f"residual must be [{m}, {n}], got {tuple(residual.shape)}")
    use_triton = backend == "triton" or (backend == "auto" and available(x.device))
    if not use_triton or m > MAX_ROWS:
        return fused_linear_reference(x, weight, norm_weight, eps, residual, gated_silu=gated_silu)
    if triton is None:
        raise RuntimeError("backend='triton' needs the triton package")
    x, weight = x.contiguous(), weight.contiguous()
    y = torch.empty(m, n, dtype=x.dtype, device=x.device)
    res = residual.contiguous() if residual is not None else y
    cfg = launch_config(m, n, k)
    block_n, block_k = block_n or cfg[0], block_k or cfg[1]
    num_warps, num_stages = num_warps or cfg[2], num_stages or cfg[3]
    chained = pdl(x.device) if use_pdl is None else use_pdl
    vec = row_vec(m, block_k)
    _fused_linear[(triton.cdiv(n, block_n),)](
        x, weight, norm_weight if norm_weight is not None else x, res, y, m, n, float(eps),
        x.stride(0), weight.stride(0), res.stride(0), y.stride(0),
        K=k, HAS_NORM=norm_weight is not None, HAS_ACT=gated_silu, HAS_RES=residual is not None,
        EVEN=n % block_n == 0 and k % block_k == 0, NUM_STAGES=num_stages,
        PDL=chained, BLOCK_M=block_rows(m), BLOCK_N=block_n, BLOCK_K=block_k, VEC=vec,
        LOG2_J=(block_k // vec).bit_length() - 1, num_warps=num_warps, launch_pdl=chained,
        enable_fp_fusion=False,
    )
    return y
