"""The event-head's memory cross-attention folded into two fixed matrices per request, and
one Triton kernel that applies it to a drafted token.

Per drafted token a block's cross-attention costs, in torch ops, an RMSNorm (six kernels),
``q_proj``, the attention, ``o_proj`` and the residual add: about ten kernel launches, the
whole per-token cost difference between the ``event-head`` and the event-blind
``target-head`` on the fast engine (a launch-bound step).  The memory is fixed for the
request, so with ``x`` the block's input row, ``r = rsqrt(mean(x²) + ε)``, ``w`` the
norm's gain, ``W_q,h`` / ``W_o,h`` head ``h``'s rows / columns of the projections and
``K_h``, ``V_h`` ``[M, d]`` the memory's keys and values::

    cross(x) = Σ_h softmax(r · x · A_h) · B_h
    A_h = diag(w) · W_q,hᵀ · K_hᵀ / √d        [D, M]
    B_h = V_h · W_o,hᵀ                          [M, D]

:func:`fold_memory` builds ``A`` ``[D, H·M]`` and ``B`` ``[H·M, D]`` (head-major) once per
request, and :func:`folded_cross` returns ``x + cross(x)``: one kernel on CUDA for a drafting
step's rows, the same arithmetic in torch elsewhere.  Reassociating the products changes
float rounding (not the function): drafts may rarely differ from the unfolded head's;
verification keeps every answer exact either way.  Each of the kernel's
programs recomputes the scores (all of ``A``) for its block of the output: right for small
heads (the world's), not for 7B-shaped ones (:func:`fold_pays`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from evspec.modules.layers import Block
from evspec.models.fast.triton_support import available as triton_available
from evspec.models.fast.triton_support import tl, triton


@dataclass
class FoldedMemory:
    """One block's folded memory: ``a`` ``[D, H·M]``, ``b`` ``[H·M, D]`` (head-major
    columns / rows), ``heads`` and ``m`` memory slots per head, ``eps`` of the
    cross-attention's norm."""

    a: torch.Tensor
    b: torch.Tensor
    heads: int
    m: int
    eps: float

    def copy_(self, other: FoldedMemory) -> None:
        """Refill these buffers (captured graphs read them) from ``other`` of the same shapes."""
        if self.a.shape != other.a.shape or self.m != other.m:
            raise ValueError("FoldedMemory.copy_: shapes differ (a new memory size needs new buffers)")
        self.a.copy_(other.a)
        self.b.copy_(other.b)


def _pow2(n: int) -> int:
    return 1 << max(0, int(n - 1).bit_length())


#: the most values ``A`` may hold for the kernel (each program reads all of ``A``)
FOLD_LIMIT = 1 << 18


def fold_pays(width: int, heads: int, memory_len: int) -> bool:
    """Whether the folded form suits this head: ``A`` (``D × H·M`` values, ``B`` the same)
    small enough for the kernel, whose every program reads all of ``A`` (the world's heads:
    256 × 4 × 69; a 7B-shaped head, 4096 × 32 × 600, keeps its projections)."""
    return width * heads * memory_len <= FOLD_LIMIT


@torch.no_grad()
def fold_memory(block: Block, kv: tuple[torch.Tensor, torch.Tensor]) -> FoldedMemory:
    """Fold ``block``'s cross-attention over one request's memory keys/values ``kv``
    (each ``[1, H, M, d]``, from ``CrossAttention.memory_kv``)."""
    cross = block.cross
    if cross is None:
        raise ValueError("fold_memory: this block has no cross-attention")
    k, v = kv[0][0].float(), kv[1][0].float()  # [H, M, d]
    heads, m, d = k.shape
    width = heads * d
    wq = cross.q_proj.weight.float().view(heads, d, width)  # [H, d, D]: rows of head h
    wo = cross.o_proj.weight.float().view(width, heads, d).permute(1, 0, 2)  # [H, D, d]
    gain = block.cross_norm.weight.float()  # [D]
    a = torch.einsum("hde,hmd->ehm", wq, k) * (gain[:, None, None] / d ** 0.5)  # [D, H, M]
    b = torch.einsum("hmd,hed->hme", v, wo)  # [H, M, D]
    dtype = kv[0].dtype
    return FoldedMemory(a.reshape(width, heads * m).to(dtype).contiguous(),
                        b.reshape(heads * m, width).to(dtype).contiguous(), heads, m,
                        float(block.cross_norm.eps))


def folded_cross_reference(x: torch.Tensor, fold: FoldedMemory) -> torch.Tensor:
    """``x + cross(x)`` in torch: ``x`` ``[..., D]``, float32 arithmetic."""
    x32 = x.float()
    r = torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + fold.eps)  # [..., 1]
    s = (x32 @ fold.a.float()) * r  # [..., H·M]
    p = torch.softmax(s.unflatten(-1, (fold.heads, fold.m)), dim=-1).flatten(-2)  # [..., H·M]
    return (x32 + p @ fold.b.float()).to(x.dtype)


#: the most rows :func:`folded_cross` sends to the kernel (a drafting step's rows: γ + 1)
MAX_KERNEL_ROWS = 32


def folded_cross(x: torch.Tensor, fold: FoldedMemory) -> torch.Tensor:
    """``x + cross(x)`` for ``x`` ``[..., D]``: the Triton kernel (up to
    :data:`MAX_KERNEL_ROWS` rows) where Triton runs (CUDA, or the interpreter), else
    :func:`folded_cross_reference`."""
    width = x.shape[-1]
    rows = x.numel() // max(1, width)
    if not 1 <= rows <= MAX_KERNEL_ROWS or not triton_available(x.device):
        return folded_cross_reference(x, fold)
    flat = x.reshape(rows, width).contiguous()
    out = torch.empty_like(flat)
    block_d = min(16, _pow2(width))
    grid = (triton.cdiv(width, block_d), rows)
    _folded_cross_kernel[grid](flat, fold.a, fold.b, out, fold.eps, D=width, M=fold.m,
                               H=fold.heads, HM_PAD=_pow2(fold.heads * fold.m),
                               BLOCK_K=min(16, _pow2(width)), BLOCK_D=block_d)
    return out.view(x.shape)


if triton is not None:

    @triton.jit
    def _folded_cross_kernel(X, A, B, OUT, eps, D: tl.constexpr, M: tl.constexpr,
                             H: tl.constexpr, HM_PAD: tl.constexpr, BLOCK_K: tl.constexpr,
                             BLOCK_D: tl.constexpr):
        """Program ``(i, r)`` writes ``OUT[r, i·BLOCK_D : (i + 1)·BLOCK_D]``: every program
        computes row ``r``'s RMS statistic, its scores against all ``H·M`` columns of ``A``
        and a softmax per head's segment (cheap, from L2), then its block of ``X + P · B``."""
        X += tl.program_id(1) * D
        OUT += tl.program_id(1) * D
        j = tl.arange(0, HM_PAD)
        j_ok = j < H * M
        ss = tl.zeros([BLOCK_K], tl.float32)
        s = tl.zeros([HM_PAD], tl.float32)
        for k0 in range(0, D, BLOCK_K):
            k = k0 + tl.arange(0, BLOCK_K)
            xk = tl.load(X + k, mask=k < D, other=0.0).to(tl.float32)
            ss += xk * xk
            ok = (k < D)[:, None] & j_ok[None, :]
            a = tl.load(A + k[:, None] * (H * M) + j[None, :], mask=ok, other=0.0).to(tl.float32)
            s += tl.sum(xk[:, None] * a, 0)
        s = s * tl.rsqrt(tl.sum(ss, 0) / D + eps)
        p = tl.zeros([HM_PAD], tl.float32)
        for h in tl.static_range(H):
            seg = (j >= h * M) & (j < h * M + M)
            sh = tl.where(seg, s, float("-inf"))
            e = tl.where(seg, tl.exp(sh - tl.max(sh, 0)), 0.0)
            p += e / tl.sum(e, 0)
        d = tl.program_id(0) * BLOCK_D + tl.arange(0, BLOCK_D)
        b = tl.load(B + j[:, None] * D + d[None, :], mask=j_ok[:, None] & (d < D)[None, :],
                    other=0.0).to(tl.float32)
        xd = tl.load(X + d, mask=d < D, other=0.0)
        o = xd.to(tl.float32) + tl.sum(p[:, None] * b, 0)
        tl.store(OUT + d, o.to(xd.dtype), mask=d < D)

else:  # pragma: no cover - depends on the install
    _folded_cross_kernel = None
