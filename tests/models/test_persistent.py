"""The persistent decode layer (one kernel a layer): the same output and cache rows as the
``layer.py`` functions around plain attention (float32), for MHA and GQA and attention over
several chunks; its counters are back at zero afterwards; a timed-out wait is reported.  The
kernel runs on a GPU, or on the CPU under ``TRITON_INTERPRET=1`` with Triton installed (one
block there, see the module docstring); elsewhere these tests skip."""

from __future__ import annotations

import pytest
import torch

from evspec.models.fast import persistent
from evspec.models.fast.fused import FusedLayer
from evspec.models.fast.layer import attention_inputs, attention_output_and_mlp
from evspec.models.fast.ops import rope_tables, rotation_sin
from evspec.models.fast.triton_support import available

DEV = torch.device("cuda" if torch.cuda.is_available() else "cpu")
needs_kernels = pytest.mark.skipif(not available(DEV), reason="needs Triton on a GPU, or TRITON_INTERPRET=1")


def _fused(hidden: int, heads: int, kv_heads: int, inter: int, gen: torch.Generator) -> FusedLayer:
    d = hidden // heads

    def r(*shape, s=1.0):
        return torch.randn(*shape, generator=gen, device=DEV) * s

    return FusedLayer(
        qkv_weight=r((heads + 2 * kv_heads) * d, hidden, s=hidden ** -0.5), qkv_bias=None,
        o_weight=r(hidden, heads * d, s=hidden ** -0.5), o_bias=None,
        gate_up_weight=r(2 * inter, hidden, s=hidden ** -0.5), gate_up_bias=None,
        down_weight=r(hidden, inter, s=inter ** -0.5), down_bias=None,
        ln1_weight=1 + 0.1 * r(hidden), ln1_eps=1e-5, ln2_weight=1 + 0.1 * r(hidden), ln2_eps=1e-6, act="silu",
    )


def _attention(q, k_cache, v_cache, pos: int, scale: float) -> torch.Tensor:
    """Softmax attention of one query per head over cache rows ``0 .. pos`` -> ``[Hq, 1, D]``."""
    groups = q.shape[0] // k_cache.shape[0]
    k = k_cache[:, : pos + 1].repeat_interleave(groups, 0)
    v = v_cache[:, : pos + 1].repeat_interleave(groups, 0)
    return torch.softmax(q @ k.transpose(1, 2) * scale, dim=-1) @ v


@needs_kernels
@pytest.mark.parametrize("heads, kv_heads, hidden, pos, kv_rows", [
    (2, 2, 128, 37, 40),  # MHA, head_dim 64, one chunk
    (4, 2, 128, 150, 160),  # GQA, head_dim 32, three chunks of 64 rows merged
])
def test_layer_matches_the_torch_functions(heads: int, kv_heads: int, hidden: int, pos: int, kv_rows: int) -> None:
    gen = torch.Generator(device=DEV).manual_seed(heads + pos)
    inter, cap = 96, 192
    f = _fused(hidden, heads, kv_heads, inter, gen)
    d = hidden // heads
    x = torch.randn(1, hidden, generator=gen, device=DEV)
    positions = torch.tensor([pos], device=DEV)
    inv_freq = 1.0 / (10000 ** (torch.arange(0, d, 2, device=DEV).float() / d))
    cos, sin = rope_tables(positions, inv_freq, 1.0, x.dtype)
    sin = rotation_sin(sin)
    caches = [torch.randn(kv_heads, cap, d, generator=gen, device=DEV) for _ in range(2)]
    mine = [c.clone() for c in caches]
    q = attention_inputs(x, f.ln1_weight, f.qkv_weight, None, cos, sin, *caches, positions, f.ln1_eps,
                         heads, kv_heads)
    out = _attention(q, *caches, pos, d ** -0.5)
    want = attention_output_and_mlp(x, out, f.o_weight, None, f.ln2_weight, f.gate_up_weight, None,
                                    f.down_weight, None, f.ln2_eps, "silu")
    sync = persistent.new_sync(kv_heads, DEV)
    got = persistent.decode_layer(x, f, *mine, cos, sin, positions, kv_rows, d ** -0.5, heads, kv_heads, sync)
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
    for a, b in zip(mine, caches):  # the token's row written, the others untouched
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    assert torch.count_nonzero(sync) == 0  # counters reset by the last tile, no error
    again = persistent.decode_layer(x, f, *mine, cos, sin, positions, kv_rows, d ** -0.5, heads, kv_heads, sync)
    assert torch.equal(again, got)  # the reset counters serve the next layer


def test_a_timed_out_wait_is_reported() -> None:
    sync = persistent.new_sync(2, torch.device("cpu"))
    persistent.check(sync)
    sync[persistent.ERROR_SLOT] = 1
    with pytest.raises(RuntimeError, match="timed out"):
        persistent.check(sync)


def test_what_the_persistent_layer_does_not_take() -> None:
    assert persistent.why_not(128, 32, 32, "silu", False) is None
    assert "head_dim" in persistent.why_not(16, 4, 4, "silu", False)
    assert "biases" in persistent.why_not(128, 32, 32, "silu", True)
    assert "attention" in persistent.why_not(128, 128, 1, "silu", False)  # 128 query rows in one block
