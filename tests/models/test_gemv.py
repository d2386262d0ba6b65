"""The fused skinny linear (RMSNorm prologue, residual epilogue): the Triton kernel equals the
separate torch ops (on a GPU, or on the CPU under ``TRITON_INTERPRET=1`` with Triton
installed), with and without each fusion, for ragged K and N; inputs are validated and more
rows than a step has fall back to the torch ops."""

from __future__ import annotations

import pytest
import torch

from evspec.models.fast.triton_support import available as triton_available
from evspec.models.fast.gemv import MAX_ROWS, fused_linear, fused_linear_reference
from evspec.models.fast.ops import rms_norm

pytestmark = pytest.mark.triton_kernels  # the kernels run under TRITON_INTERPRET=1 on a CPU


def _device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _inputs(m: int, n: int, k: int, device: torch.device, seed: int = 0):
    gen = torch.Generator(device=device).manual_seed(seed)
    x = torch.randn(m, k, generator=gen, device=device)
    w = torch.randn(n, k, generator=gen, device=device) / k ** 0.5
    nw = 1 + 0.1 * torch.randn(k, generator=gen, device=device)
    res = torch.randn(m, n, generator=gen, device=device)
    return x, w, nw, res


def test_reference_is_norm_then_linear_then_residual() -> None:
    x, w, nw, res = _inputs(3, 40, 24, torch.device("cpu"))
    want = res + rms_norm(x, nw, 1e-5) @ w.T
    torch.testing.assert_close(fused_linear_reference(x, w, nw, 1e-5, res), want)
    torch.testing.assert_close(fused_linear(x, w, backend="torch"), x @ w.T)


def test_bad_shapes_and_backends_are_refused() -> None:
    x, w, nw, res = _inputs(2, 8, 16, torch.device("cpu"))
    with pytest.raises(ValueError, match="do not chain"):
        fused_linear(x, w[:, :8])
    with pytest.raises(ValueError, match="do not chain"):
        fused_linear(x, w, nw[:4])
    with pytest.raises(ValueError, match="residual"):
        fused_linear(x, w, residual=res[:, :3])
    with pytest.raises(ValueError, match="backend"):
        fused_linear(x, w, backend="cublas")
    many = torch.randn(MAX_ROWS + 1, 16)  # a prefill: the torch ops, whatever the backend
    torch.testing.assert_close(fused_linear(many, w, nw, residual=None, backend="triton"),
                               fused_linear_reference(many, w, nw))


def test_gated_silu_feeds_act_gate_times_up() -> None:
    x, w, _, res = _inputs(2, 40, 24, torch.device("cpu"))
    gate_up = torch.randn(2, 48)
    want = res + (torch.nn.functional.silu(gate_up[:, :24]) * gate_up[:, 24:]) @ w.T
    torch.testing.assert_close(fused_linear(gate_up, w, residual=res, gated_silu=True, backend="torch"), want)
    with pytest.raises(ValueError, match="gated_silu"):
        fused_linear(torch.randn(2, 47), w, gated_silu=True)


@pytest.mark.skipif(not triton_available(_device()), reason="needs Triton on a GPU, or TRITON_INTERPRET=1")
@pytest.mark.parametrize("m, n, k", [(1, 40, 96), (9, 33, 130)])
def test_triton_gated_silu_equals_the_torch_ops(m: int, n: int, k: int) -> None:
    dev = _device()
    gen = torch.Generator(device=dev).manual_seed(m)
    gate_up = torch.randn(m, 2 * k, generator=gen, device=dev)
    w, res = torch.randn(n, k, generator=gen, device=dev) / k ** 0.5, torch.randn(m, n, generator=gen, device=dev)
    args = dict(residual=res, gated_silu=True)
    torch.testing.assert_close(fused_linear(gate_up, w, backend="triton", **args),
                               fused_linear_reference(gate_up, w, **args), atol=1e-4, rtol=1e-4)


@pytest.mark.skipif(not triton_available(_device()), reason="needs Triton on a GPU, or TRITON_INTERPRET=1")
@pytest.mark.parametrize("m, n, k, norm, residual", [
    (1, 96, 256, True, False),  # q/k/v, gate/up: the norm prologue
    (1, 80, 200, False, True),  # o, down: the residual epilogue; ragged N and K
    (1, 64, 1024, True, True),  # blocks that divide N and K: the unmasked loads
    (9, 64, 128, True, True),  # a score step
    (16, 33, 130, False, False),
])
def test_triton_kernel_equals_the_torch_ops(m: int, n: int, k: int, norm: bool, residual: bool) -> None:
    dev = _device()
    x, w, nw, res = _inputs(m, n, k, dev, seed=m + n)
    args = (x, w, nw if norm else None, 1e-5, res if residual else None)
    torch.testing.assert_close(fused_linear(*args, backend="triton"), fused_linear_reference(*args),
                               atol=1e-4, rtol=1e-4)
    if dev.type == "cuda":  # bf16, as the engine runs it
        b = [a.bfloat16() if isinstance(a, torch.Tensor) else a for a in args]
        torch.testing.assert_close(fused_linear(*b, backend="triton").float(),
                                   fused_linear_reference(*b).float(), atol=5e-2, rtol=5e-2)
