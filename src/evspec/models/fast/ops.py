"""The elementwise math of a LLaMA layer as small pure functions (RMSNorm, RoPE, the
gated MLP activation, the attention masks), written to compile well.

Each function is the transformers computation with the same rounding points (so the
fused fast path equals the HF modules in float32 and rounds like them in bf16), but

* takes plain tensors and constants only (no modules: ``torch.compile`` then guards on
  shapes, not on which layer's module it was handed, so one compiled graph serves all
  layers);
* has static shapes and no host syncs (no ``.item()``, no data-dependent shapes): the
  positions arrive as a device tensor, so one graph serves every position;
* works on a joint view where that saves kernels, e.g. RoPE on the query *and* key heads
  of the fused projection output in one expression.

Eagerly, each is a handful of kernels (the HF modules' count or fewer); under
``torch.compile`` each becomes one fused kernel (RMSNorm: one reduction; RoPE + the
KV-cache write: one pointwise kernel; activation x up: one pointwise kernel).
"""

from __future__ import annotations

import torch
from torch.nn import functional as F
from torch.nn.attention.bias import CausalBias, causal_lower_right

#: ``config.hidden_act`` values the fused path implements (name -> HF activation)
ACTIVATIONS = ("silu", "swish", "gelu", "gelu_pytorch_tanh", "relu")


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """LLaMA RMSNorm of ``x`` ``[..., H]`` with ``weight`` ``[H]``, HF's rounding points:
    in float32, ``x * rsqrt(mean(x^2) + eps)``, cast back to ``x.dtype``, then ``weight *``.
    The float32 part is ``F.rms_norm`` without weight (one fused kernel where torch has
    one; the same formula as HF's otherwise)."""
    normed = F.rms_norm(x.float(), (x.shape[-1],), eps=eps)  # [..., H] float32
    return weight * normed.to(x.dtype)


def rope_tables(
    positions: torch.Tensor,  # [T] int64, on the device
    inv_freq: torch.Tensor,  # [D/2]
    scaling: float,
    dtype: torch.dtype,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(cos, sin)`` ``[T, D]`` in ``dtype``, computed in float32 the way the HF rotary
    embedding does (frequencies duplicated over both halves, times ``attention_scaling``)."""
    freqs = positions.float()[:, None] * inv_freq.float()[None, :]  # [T, D/2]
    emb = torch.cat((freqs, freqs), dim=-1)  # [T, D]
    return (emb.cos() * scaling).to(dtype), (emb.sin() * scaling).to(dtype)


def rotation_sin(sin: torch.Tensor) -> torch.Tensor:
    """``sin`` ``[T, D]`` with its first half negated: then ``rotate_half(x) * sin ==
    roll(x, D/2) * rotation_sin(sin)`` bit for bit (negation is exact and rounding is
    sign-symmetric), one kernel fewer per use.  Computed once per pass."""
    half = sin.shape[-1] // 2
    return torch.cat((-sin[:, :half], sin[:, half:]), dim=-1)  # [T, D]


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin_rot: torch.Tensor) -> torch.Tensor:
    """Rotary embedding of ``x`` ``[T, n, D]`` (any number ``n`` of heads, e.g. the query
    and key heads of the fused projection together) with ``cos`` ``[T, D]`` and
    ``sin_rot = rotation_sin(sin)``: HF's ``x * cos + rotate_half(x) * sin``, same rounding."""
    swapped = torch.roll(x, x.shape[-1] // 2, dims=-1)  # [T, n, D] = cat(x2, x1)
    return x * cos[:, None, :] + swapped * sin_rot[:, None, :]


def activation(name: str, x: torch.Tensor) -> torch.Tensor:
    """``config.hidden_act`` applied to ``x`` (the functional form of HF's ``ACT2FN``)."""
    if name in ("silu", "swish"):
        return F.silu(x)
    if name == "gelu":
        return F.gelu(x)
    if name == "gelu_pytorch_tanh":
        return F.gelu(x, approximate="tanh")
    if name == "relu":
        return F.relu(x)
    raise NotImplementedError(
        f"the fused fast path implements hidden_act in {', '.join(ACTIVATIONS)}, not {name!r}; "
        "use enable_fast(fuse=False)"
    )


def gated(name: str, gate_up: torch.Tensor) -> torch.Tensor:
    """``act(gate) * up`` from the fused projection ``[T, 2I]`` (gate rows first) -> ``[T, I]``."""
    inter = gate_up.shape[-1] // 2
    return activation(name, gate_up[..., :inter]) * gate_up[..., inter:]


def attention_bias(
    positions: torch.Tensor,  # [T] int64: the queries' positions
    kv_len: int,
    dtype: torch.dtype,
) -> torch.Tensor:
    """Additive mask ``[T, kv_len]``: 0 where key ``j <= positions[i]`` (visible), -inf
    elsewhere (later positions, padding, stale rows).  Built once per step on the device
    from the position tensor and shared by every layer (a boolean mask would be converted
    to this inside each attention call)."""
    keys = torch.arange(kv_len, device=positions.device)  # [kv_len]
    hidden = keys[None, :] > positions[:, None]  # [T, kv_len] True = masked
    return torch.zeros(hidden.shape, dtype=dtype, device=positions.device).masked_fill_(hidden, float("-inf"))


def lower_right_causal(t: int, kv_len: int) -> CausalBias:
    """Causal attention of the last ``t`` of ``kv_len`` positions (query ``i`` sees keys
    ``<= kv_len - t + i``), as the bias object SDPA dispatches to the flash / efficient
    kernels without materialising a mask (on CPU it is materialised)."""
    return causal_lower_right(t, kv_len)
