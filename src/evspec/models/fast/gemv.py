"""Skinny matrix products (a few token rows) with the layer's elementwise work folded in.

A decode step is weight-bandwidth bound: on the H200 its GEMVs read 13.5 GB at 3.76 TB/s
(benchmarks/fast_engine.md, round 3), and everything between them — the RMSNorm before
q/k/v and gate/up, the residual adds after o and down, cuBLAS's split-K reductions — adds
kernels, and each kernel a launch gap.  :func:`fused_linear` computes

    y = linear(norm(x)) [+ residual]        norm(x) = weight_n * (x * rsqrt(mean(x^2) + eps))
    y = linear(silu(gate) * up) [+ residual]    (``gated_silu``: x is the fused [gate | up])

in one kernel: every program recomputes the rows' inverse RMS from ``x`` (a few KB, read
from L2), normalises its slice of ``x`` on the fly with the transformers rounding points
(float32, cast to the activation dtype, times the norm weight) and adds the residual in the
epilogue (the product rounded to the activation dtype first, as ``x + o_proj(...)`` does).
On CUDA with Triton it is a Triton kernel; elsewhere :func:`fused_linear_reference` is the
same computation in torch.  One row (a decode step) sums its products in registers and
reduces once; more rows pad to 16 for ``tl.dot``.  Launch configurations per 7B shape come
from an H200 sweep (:data:`DECODE_CONFIGS`); on Hopper the first weight tile is read before
waiting on the previous kernel (programmatic dependent launch, ``triton_support.pdl``).
The engine's Triton decode layer (``triton_layer.py``) runs it for o, gate/up and down;
``benchmarks/gemv_probe.py`` times it against cuBLAS.
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
    def x_tile(X, NW, rstd, m, m_ok, k, k_ok, stride_xm, K: tl.constexpr,
               HAS_NORM: tl.constexpr, HAS_ACT: tl.constexpr):
        """Columns ``k`` of the GEMV's input: ``x``, ``silu(gate) * up`` or the normed ``x``,
        each rounded where torch rounds."""
        x_mask = m_ok[:, None] & k_ok[None, :]
        xk = tl.load(X + m[:, None] * stride_xm + k[None, :], mask=x_mask, other=0.0)
        if HAS_ACT:  # X holds [gate | up] (2K wide)
            up = tl.load(X + m[:, None] * stride_xm + K + k[None, :], mask=x_mask, other=0.0)
            g32 = xk.to(tl.float32)
            xk = (g32 / (1.0 + tl.exp(-g32))).to(up.dtype) * up
        if HAS_NORM:
            nw = tl.load(NW + k, mask=k_ok, other=0.0)
            xk = (xk.to(tl.float32) * rstd[:, None]).to(nw.dtype) * nw[None, :]
        return xk

    @triton.jit
    def accumulate(acc, xk, wk, BLOCK_M: tl.constexpr, IEEE: tl.constexpr, VEC: tl.constexpr):
        """One row (BLOCK_M 1): products summed in registers, reduced once at the end —
        each run of ``VEC`` neighbouring products (one thread's vector load) summed first,
        so the accumulator is ``[BLOCK_N, BLOCK_K / VEC]``; more rows: ``tl.dot`` on BLOCK_M
        (>= 16) padded rows.  (One return: Triton compiles the code after a constexpr-true
        ``if ...: return``.)"""
        if BLOCK_M == 1:
            prod = wk.to(tl.float32) * xk.to(tl.float32)
            if VEC > 1:
                prod = tl.sum(tl.reshape(prod, [wk.shape[0], wk.shape[1] // VEC, VEC]), 2)
            out = acc + prod
        elif IEEE:
            out = acc + tl.dot(xk, tl.trans(wk), input_precision="ieee")
        else:
            out = acc + tl.dot(xk, tl.trans(wk))
        return out

    @triton.jit
    def _fused_linear(X, W, NW, RES, Y, M, N, eps,
                      stride_xm, stride_wn, stride_rm, stride_ym,
                      K: tl.constexpr, HAS_NORM: tl.constexpr, HAS_ACT: tl.constexpr, HAS_RES: tl.constexpr,
                      IEEE: tl.constexpr, EVEN: tl.constexpr, NUM_STAGES: tl.constexpr, PDL: tl.constexpr,
                      BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, VEC: tl.constexpr):
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
            rstd = row_rstd(X, stride_xm, m, m_ok, eps, K, BLOCK_K, BLOCK_M)
        if BLOCK_M == 1:
            acc = tl.zeros([BLOCK_N, BLOCK_K // VEC], tl.float32)
        else:
            acc = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
        acc = accumulate(acc, x_tile(X, NW, rstd, m, m_ok, k, k < K, stride_xm, K, HAS_NORM, HAS_ACT), w0,
                         BLOCK_M, IEEE, VEC)
        for k0 in tl.range(BLOCK_K, K, BLOCK_K, num_stages=NUM_STAGES):
            k = k0 + tl.arange(0, BLOCK_K)
            k_ok = k < K
            xk = x_tile(X, NW, rstd, m, m_ok, k, k_ok, stride_xm, K, HAS_NORM, HAS_ACT)
            acc = accumulate(acc, xk, w_tile(W, n, n_ok, k, k_ok, stride_wn, EVEN), BLOCK_M, IEEE, VEC)
        if BLOCK_M == 1:
            y = tl.sum(acc, 1)[None, :].to(Y.dtype.element_ty)
        else:
            y = acc.to(Y.dtype.element_ty)
        if HAS_RES:
            y = tl.load(RES + m[:, None] * stride_rm + n[None, :], mask=m_ok[:, None] & n_ok[None, :],
                        other=0.0) + y
        tl.store(Y + m[:, None] * stride_ym + n[None, :], y, mask=m_ok[:, None] & n_ok[None, :])

else:  # pragma: no cover - depends on the install
    w_tile = x_tile = accumulate = None


#: one-row launch configurations (BLOCK_N, BLOCK_K, num_warps, num_stages) by weight shape
#: (N, K) for the LLaMA-7B projections: the fastest inside chained greedy decoding on the
#: H200 (``benchmarks/step_sweep.py``, two rounds of one kernel changed at a time, then
#: together: 4.12 -> 3.97 -> 3.89 ms/token; benchmarks/fast_engine.md, round 6).  Other
#: shapes take DECODE_DEFAULT.
DECODE_CONFIGS = {
    (12288, 4096): (8, 1024, 4, 1),  # q/k/v
    (4096, 4096): (32, 2048, 8, 1),  # o
    (22016, 4096): (16, 1024, 4, 3),  # gate/up
    (4096, 11008): (16, 2048, 8, 1),  # down
}
DECODE_DEFAULT = (8, 1024, 4, 3)
#: one-row GEMVs sum this many neighbouring products per thread before accumulating
#: (:func:`accumulate`); 1: a ``[BLOCK_N, BLOCK_K]`` float32 accumulator
ROW_VEC = 8


#: launch configurations of steps of 2 .. MAX_ROWS rows (``tl.dot`` on 16 padded rows) by
#: weight shape; other shapes take SCORE_DEFAULT
SCORE_CONFIGS: dict[tuple[int, int], tuple[int, int, int, int]] = {}
SCORE_DEFAULT = (64, 128, 4, 3)


def launch_config(m: int, n: int, k: int) -> tuple[int, int, int, int]:
    """``(BLOCK_N, BLOCK_K, num_warps, num_stages)`` for ``m`` rows of an ``n`` × ``k`` weight."""
    if m == 1:
        return DECODE_CONFIGS.get((n, k), DECODE_DEFAULT)
    return SCORE_CONFIGS.get((n, k), SCORE_DEFAULT)


def row_vec(m: int, block_k: int) -> int:
    """The ``VEC`` of :func:`accumulate` for ``m`` rows in blocks of ``block_k`` columns."""
    return ROW_VEC if m == 1 and block_k % ROW_VEC == 0 else 1


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
    _fused_linear[(triton.cdiv(n, block_n),)](
        x, weight, norm_weight if norm_weight is not None else x, res, y, m, n, float(eps),
        x.stride(0), weight.stride(0), res.stride(0), y.stride(0),
        K=k, HAS_NORM=norm_weight is not None, HAS_ACT=gated_silu, HAS_RES=residual is not None,
        IEEE=x.dtype == torch.float32, EVEN=n % block_n == 0 and k % block_k == 0, NUM_STAGES=num_stages,
        PDL=chained, BLOCK_M=1 if m == 1 else max(16, triton.next_power_of_2(m)), BLOCK_N=block_n,
        BLOCK_K=block_k, VEC=row_vec(m, block_k), num_warps=num_warps, launch_pdl=chained,
    )
    return y
