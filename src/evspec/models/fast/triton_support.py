"""Triton where it exists: the import (CUDA builds of torch ship it; CPU-only installs do
not), whether a device can run the kernels, and the jitted helpers the kernels share.  The
kernel modules (``decode_attention``, ``gemv``, ``triton_layer``) fall back to torch when
:func:`available` says no."""

from __future__ import annotations

import os

import torch

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - depends on the install
    triton = None
    tl = None


def available(device: torch.device) -> bool:
    """Whether the Triton kernels can run for tensors on ``device`` (CUDA with Triton, or
    any device under ``TRITON_INTERPRET=1``, which the tests use on a CPU)."""
    return triton is not None and (device.type == "cuda" or os.environ.get("TRITON_INTERPRET") == "1")


if triton is not None:

    @triton.jit
    def row_rstd(X, stride_x, m, m_ok, eps, K: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_M: tl.constexpr):
        """The inverse RMS of rows ``m`` of ``X`` (``K`` wide), in float32: RMSNorm's statistic."""
        ss = tl.zeros([BLOCK_M], tl.float32)
        for k0 in range(0, K, BLOCK_K):
            k = k0 + tl.arange(0, BLOCK_K)
            xk = tl.load(X + m[:, None] * stride_x + k[None, :], mask=m_ok[:, None] & (k[None, :] < K),
                         other=0.0).to(tl.float32)
            ss += tl.sum(xk * xk, 1)
        return tl.rsqrt(ss / K + eps)

else:  # pragma: no cover - depends on the install
    row_rstd = None
