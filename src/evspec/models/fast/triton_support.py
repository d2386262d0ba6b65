"""Triton where it exists: the import (CUDA builds of torch ship it; CPU-only installs do
not), whether a device can run the kernels, and the jitted helpers the kernels share.  The
kernel modules (``decode_attention``, ``gemv``, ``triton_layer``) fall back to torch when
:func:`available` says no."""

from __future__ import annotations

import functools
import os

import torch

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - depends on the install
    triton = None
    tl = None
try:  # grid dependency control (programmatic dependent launch), Triton >= 3.4
    from triton.language.extra.cuda import gdc_launch_dependents, gdc_wait
except ImportError:  # pragma: no cover - depends on the install
    gdc_launch_dependents = gdc_wait = None


def available(device: torch.device) -> bool:
    """Whether the Triton kernels can run for tensors on ``device`` (CUDA with Triton, or
    any device under ``TRITON_INTERPRET=1``, which the tests use on a CPU)."""
    return triton is not None and (device.type == "cuda" or os.environ.get("TRITON_INTERPRET") == "1")


def pdl(device: torch.device) -> bool:
    """Whether kernels on ``device`` launch with programmatic dependent launch: a Hopper or
    newer GPU, a Triton that has it, not the interpreter, and ``EVSPEC_PDL`` not ``0``.

    A decode step is a chain of ~200 short kernels; with PDL each kernel's blocks start while
    the previous kernel drains, read their first weight tile (weights never change), and
    only then wait (``griddepcontrol.wait``) for the previous kernel's writes.  Every kernel
    that takes part reads activations and writes anything only after :func:`pdl_wait`."""
    return (triton is not None and gdc_wait is not None and device.type == "cuda"
            and os.environ.get("TRITON_INTERPRET") != "1" and os.environ.get("EVSPEC_PDL", "1") != "0"
            and _sm_major(torch.device(device).index or torch.cuda.current_device()) >= 9)


@functools.cache
def _sm_major(index: int) -> int:
    """The compute capability's major number of CUDA device ``index`` (asked once: every
    kernel launch calls :func:`pdl`)."""
    return torch.cuda.get_device_capability(index)[0]


if triton is not None:

    @triton.jit
    def pdl_release(PDL: tl.constexpr):
        """Let the next kernel's blocks launch (once every block of this one has run this)."""
        if PDL:
            gdc_launch_dependents()

    @triton.jit
    def pdl_wait(PDL: tl.constexpr):
        """Wait until the previous kernel has finished and its writes are visible."""
        if PDL:
            gdc_wait()

    @triton.jit
    def row_rstd(X, stride_x, m, m_ok, eps, K: tl.constexpr, BLOCK_M: tl.constexpr):
        """The inverse RMS of rows ``m`` of ``X`` (``K`` wide), in float32: RMSNorm's statistic.
        Each row's sum of squares is a chain of FMAs over blocks of 256 columns, then a fixed
        pairwise tree: the same for a row whatever the number of rows (row invariance)."""
        B: tl.constexpr = 256
        ss = tl.zeros([BLOCK_M, B], tl.float32)
        for k0 in range(0, K, B):
            k = k0 + tl.arange(0, B)
            xk = tl.load(X + m[:, None] * stride_x + k[None, :], mask=m_ok[:, None] & (k[None, :] < K),
                         other=0.0).to(tl.float32)
            ss = tl.fma(xk, xk, ss)
        for i in tl.static_range(8):  # 256 -> 1, neighbours first
            lo, hi = tl.split(tl.reshape(ss, [BLOCK_M, 1 << (7 - i), 2]))
            ss = lo + hi
        return tl.rsqrt(tl.reshape(ss, [BLOCK_M]) / K + eps)

else:  # pragma: no cover - depends on the install
    row_rstd = pdl_release = pdl_wait = None
