"""One LLaMA layer of a decode or score step in four Triton kernels (plus attention).

The compiled step (``layer.py`` under ``torch.compile``) runs about 13 kernels per layer on
an H200: norm, GEMV, RoPE and cache writes, attention, GEMV, split-K reduce, norm, GEMV,
activation, GEMV, split-K reduce; at batch 1 each costs a launch gap, and the elementwise
ones add 0.4 ms per step (benchmarks/fast_engine.md).  Here, with the same
signatures as :func:`~evspec.models.fast.layer.attention_inputs` and
:func:`~evspec.models.fast.layer.attention_output_and_mlp`:

    attention_inputs:  one kernel: RMSNorm prologue, the q/k/v GEMV, RoPE on q and k in the
                       epilogue (each program holds a head's two rotary halves), q stored,
                       k and v written into the cache rows at the positions
    output and MLP:    o GEMV + residual; RMSNorm + gate/up GEMV; silu(gate)·up + down GEMV
                       + residual (:func:`~evspec.models.fast.gemv.fused_linear`)

with the transformers rounding points (every intermediate the HF modules round to the
activation dtype is rounded here too).  On Hopper the kernels (and split-KV attention) are
chained with programmatic dependent launch (:func:`~.triton_support.pdl`): each reads its
first weight tile while the previous kernel drains.  The functions take steps of at most
``MAX_ROWS`` tokens on CUDA (or under ``TRITON_INTERPRET=1``); anything else runs the
``layer.py`` functions, which are also what the CPU tests compare against.

The engine (``enable_fast(kernels="triton")``, opt-in) runs them for every decode and score
step of up to ``STEP_ROWS`` tokens.  The kernels are row-invariant: a row's result is bitwise
the same whether the step has 1 or 16 rows (each row's sums are chains of FMAs in an order
fixed by the code, :func:`~evspec.models.fast.gemv.accumulate`; the weights are read once
for all rows), so scoring ``k + 1`` tokens gives the logits ``k + 1`` decode steps give.
"""

from __future__ import annotations

import torch

from evspec.models.fast.gemv import (
    MAX_ROWS, accumulate, block_rows, fused_linear, launch_config, rounded, row_vec, tree_sum,
    w_tile, x_tile,
)
from evspec.models.fast.layer import attention_inputs, attention_output_and_mlp
from evspec.models.fast.triton_support import available, pdl, pdl_release, pdl_wait, row_rstd, tl, triton

#: the engine's steps of at most this many tokens run these kernels: every decode and score
#: step, so that a position's logits do not depend on the step that computed it
STEP_ROWS = MAX_ROWS
#: columns of each rotary half one q/k/v program of a decode step takes (twice this many
#: weight rows; 4: 8 rows, the best one-row GEMV block on the H200)
DECODE_HEAD_COLUMNS = 4
#: the same for steps of more rows (a row's arithmetic does not depend on it; 2 keeps sixteen
#: rows' accumulators in registers)
SCORE_HEAD_COLUMNS = 2


def rotary_split(head_dim: int, rows: int = 2) -> int | None:
    """Programs per head of the q/k/v kernel: each takes ``head_dim / (2 · split)`` columns of
    both rotary halves — :data:`DECODE_HEAD_COLUMNS` in a decode step (``rows`` 1; LLaMA-7B:
    split 16, 1536 programs), :data:`SCORE_HEAD_COLUMNS` in steps of more rows — where the
    head allows, else the whole half.  None when the head is odd
    or its half narrower than 16."""
    half = head_dim // 2
    if head_dim % 2 or half < 16:
        return None
    cols = DECODE_HEAD_COLUMNS if rows == 1 else SCORE_HEAD_COLUMNS
    if half >= 32 and half % cols == 0:
        return half // cols
    return 1


def supported(head_dim: int | None, act: str, biases: bool) -> str | None:
    """Why a layer cannot use these kernels (None: it can); ``head_dim`` None: the output
    and MLP kernels only, which do not depend on it."""
    if biases:
        return "projection biases"
    if act not in ("silu", "swish"):
        return f"activation {act!r} (silu only)"
    if head_dim is not None and (rotary_split(head_dim) is None or head_dim & (head_dim - 1)):
        return f"head_dim {head_dim} (a power of two >= 32)"
    return None


if triton is not None:

    @triton.jit
    def _qkv_rope_cache(X, NW, W, COS, SIN, POS, Q, KC, VC, T, eps,
                        stride_x, stride_w, stride_cs, stride_qh, stride_qt, stride_ch, stride_cr,
                        K: tl.constexpr, D: tl.constexpr, HQ: tl.constexpr, HKV: tl.constexpr,
                        SPLIT: tl.constexpr, NUM_STAGES: tl.constexpr, PDL: tl.constexpr,
                        EVEN_K: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr,
                        VEC: tl.constexpr, LOG2_J: tl.constexpr):
        HALF: tl.constexpr = D // 2
        BH: tl.constexpr = HALF // SPLIT
        pdl_release(PDL)
        pid = tl.program_id(0)
        head = pid // SPLIT
        part = pid % SPLIT
        m = tl.arange(0, BLOCK_M)
        m_ok = m < T
        c = part * BH + tl.arange(0, BH)  # this program's columns of the first rotary half
        row_lo = head * D + c
        ones = c >= 0
        k = tl.arange(0, BLOCK_K)
        w_lo = w_tile(W, row_lo, ones, k, k < K, stride_w, EVEN_K)  # first tiles, before the wait (PDL)
        w_hi = w_tile(W, row_lo + HALF, ones, k, k < K, stride_w, EVEN_K)
        pdl_wait(PDL)
        rstd = row_rstd(X, stride_x, m, m_ok, eps, K, BLOCK_M)
        # every row alike (gemv.accumulate)
        acc_lo = tl.zeros([BLOCK_M, BH, BLOCK_K // VEC], tl.float32)
        acc_hi = tl.zeros([BLOCK_M, BH, BLOCK_K // VEC], tl.float32)
        xk = x_tile(X, NW, rstd, m, m_ok, k, k < K, stride_x, K, True, False)
        acc_lo = accumulate(acc_lo, xk, w_lo, VEC)
        acc_hi = accumulate(acc_hi, xk, w_hi, VEC)
        for k0 in tl.range(BLOCK_K, K, BLOCK_K, num_stages=NUM_STAGES):
            k = k0 + tl.arange(0, BLOCK_K)
            k_ok = k < K
            xk = x_tile(X, NW, rstd, m, m_ok, k, k_ok, stride_x, K, True, False)
            acc_lo = accumulate(acc_lo, xk, w_tile(W, row_lo, ones, k, k_ok, stride_w, EVEN_K), VEC)
            w_hi = w_tile(W, row_lo + HALF, ones, k, k_ok, stride_w, EVEN_K)
            acc_hi = accumulate(acc_hi, xk, w_hi, VEC)
        acc_lo = tree_sum(acc_lo, LOG2_J)  # [BLOCK_M, BH]
        acc_hi = tree_sum(acc_hi, LOG2_J)
        y_lo = acc_lo.to(Q.dtype.element_ty)  # the projection's output, rounded as F.linear's
        y_hi = acc_hi.to(Q.dtype.element_ty)
        if head < HQ + HKV:  # RoPE (SIN is ops.rotation_sin: its first half negated)
            cs = m[:, None] * stride_cs + c[None, :]
            cos_lo = tl.load(COS + cs, mask=m_ok[:, None], other=0.0)
            cos_hi = tl.load(COS + cs + HALF, mask=m_ok[:, None], other=0.0)
            sin_lo = tl.load(SIN + cs, mask=m_ok[:, None], other=0.0)
            sin_hi = tl.load(SIN + cs + HALF, mask=m_ok[:, None], other=0.0)
            # bf16 math as float32, rounded where torch rounds
            lo32, hi32 = y_lo.to(tl.float32), y_hi.to(tl.float32)
            a = rounded(lo32 * cos_lo.to(tl.float32), y_lo)
            b = rounded(hi32 * sin_lo.to(tl.float32), y_lo)
            out_lo = (a + b).to(Q.dtype.element_ty)
            a = rounded(hi32 * cos_hi.to(tl.float32), y_lo)
            b = rounded(lo32 * sin_hi.to(tl.float32), y_lo)
            out_hi = (a + b).to(Q.dtype.element_ty)
        else:
            out_lo = y_lo
            out_hi = y_hi
        if head < HQ:
            dst = Q + head * stride_qh + m[:, None] * stride_qt + c[None, :]
        else:
            pos = tl.load(POS + m, mask=m_ok, other=0)
            if head < HQ + HKV:
                dst = KC + (head - HQ) * stride_ch + pos[:, None] * stride_cr + c[None, :]
            else:
                dst = VC + (head - HQ - HKV) * stride_ch + pos[:, None] * stride_cr + c[None, :]
        tl.store(dst, out_lo, mask=m_ok[:, None])
        tl.store(dst + HALF, out_hi, mask=m_ok[:, None])


def _use_triton(x: torch.Tensor, head_dim: int | None, act: str, biases: bool) -> bool:
    """Whether this step runs the kernels (else the ``layer.py`` functions)."""
    return available(x.device) and x.shape[0] <= MAX_ROWS and supported(head_dim, act, biases) is None


def triton_attention_inputs(
    x: torch.Tensor, ln_weight: torch.Tensor, qkv_weight: torch.Tensor, qkv_bias: torch.Tensor | None,
    cos: torch.Tensor, sin: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
    positions: torch.Tensor, eps: float, num_heads: int, num_kv_heads: int,
) -> torch.Tensor:
    """:func:`~evspec.models.fast.layer.attention_inputs` in one kernel -> ``q [Hq, T, D]``."""
    head_dim = k_cache.shape[-1]
    if not _use_triton(x, head_dim, "silu", qkv_bias is not None):
        return attention_inputs(x, ln_weight, qkv_weight, qkv_bias, cos, sin, k_cache, v_cache, positions,
                                eps, num_heads, num_kv_heads)
    t, hidden = x.shape
    x, qkv_weight, cos, sin = x.contiguous(), qkv_weight.contiguous(), cos.contiguous(), sin.contiguous()
    q = torch.empty(num_heads, t, head_dim, dtype=x.dtype, device=x.device)
    split = rotary_split(head_dim, t)
    _, block_k, num_warps, num_stages = launch_config(t, qkv_weight.shape[0], hidden)
    vec = row_vec(t, block_k)
    chained = pdl(x.device)
    _qkv_rope_cache[((num_heads + 2 * num_kv_heads) * split,)](
        x, ln_weight, qkv_weight, cos, sin, positions, q, k_cache, v_cache, t, float(eps),
        x.stride(0), qkv_weight.stride(0), cos.stride(0), q.stride(0), q.stride(1),
        k_cache.stride(0), k_cache.stride(1),
        K=hidden, D=head_dim, HQ=num_heads, HKV=num_kv_heads, SPLIT=split,
        NUM_STAGES=num_stages, PDL=chained, BLOCK_M=block_rows(t), BLOCK_K=block_k,
        EVEN_K=hidden % block_k == 0, VEC=vec, LOG2_J=(block_k // vec).bit_length() - 1,
        num_warps=num_warps, launch_pdl=chained,
        enable_fp_fusion=False,
    )
    return q


def triton_attention_output_and_mlp(
    x: torch.Tensor, attn: torch.Tensor, o_weight: torch.Tensor, o_bias: torch.Tensor | None,
    ln_weight: torch.Tensor, gate_up_weight: torch.Tensor, gate_up_bias: torch.Tensor | None,
    down_weight: torch.Tensor, down_bias: torch.Tensor | None, eps: float, act: str,
) -> torch.Tensor:
    """:func:`~evspec.models.fast.layer.attention_output_and_mlp` in three kernels."""
    biases = any(b is not None for b in (o_bias, gate_up_bias, down_bias))
    if not _use_triton(x, None, act, biases):
        return attention_output_and_mlp(x, attn, o_weight, o_bias, ln_weight, gate_up_weight, gate_up_bias,
                                        down_weight, down_bias, eps, act)
    t = x.shape[0]
    # [T, Hq * D]: a view of split-KV's [T, Hq, D] storage (a copy after other attention kinds)
    a = attn.transpose(0, 1).reshape(t, attn.shape[0] * attn.shape[2])
    x = fused_linear(a, o_weight, residual=x)
    gate_up = fused_linear(x, gate_up_weight, ln_weight, eps)
    return fused_linear(gate_up, down_weight, residual=x, gated_silu=True)
