"""One LLaMA layer over fused weights, as the two functions ``torch.compile`` compiles.

The layer is cut around attention::

    attention_inputs:   h = RMSNorm(x); qkv = h @ W_qkv^T; RoPE(q, k) at the positions;
                        k, v written into this layer's cache rows      -> q [Hq, T, D]
    (attention over the cache: eager SDPA, see FastLlama)              -> a [Hq, T, D]
    attention_output_and_mlp:
                        x = x + a' @ W_o^T (a' = a as [T, Hq*D]); h = RMSNorm(x);
                        x = x + W_down (act(gate) * up)(h @ W_gate_up^T)  -> x [T, H]

Why this cut: the only shape that changes with the position is the number of cache rows
attention reads (a kv bucket).  Keeping attention outside the compiled functions makes
them depend on the step size ``T`` alone, so there is one compile per step bucket (not
per (bucket, kv bucket) pair, which re-compiled the whole 32-layer step every 256
positions), and both functions take every tensor as an argument, so the one compiled
graph serves all layers.  The cache write is an ``index_copy_`` into this layer's view
``cache.k[i]`` handed in as an argument: the compiler writes those rows in place.
(Compiling a step that indexes the whole ``[layers, ...]`` cache tensor inside the graph
makes the functionalised writes copy full cache buffers on every step.)

Everything is static-shape and sync-free: ``positions`` is a device tensor, no
``.item()``, no data-dependent shapes.

Prefills have a varying token count.  :func:`attention_inputs_any_length` and
:func:`attention_output_and_mlp_any_length` are the same functions under their own
names: compiled with the token dimension marked dynamic, and, being separate code
objects, their compiled entries stay apart from the fixed-size steps' static ones.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.nn import functional as F

from evspec.models.fast.ops import apply_rope, gated, rms_norm


def attention_inputs(
    x: torch.Tensor,  # [T, H] residual stream
    ln_weight: torch.Tensor,  # [H]
    qkv_weight: torch.Tensor,  # [(Hq + 2 Hkv) * D, H]
    qkv_bias: torch.Tensor | None,  # [(Hq + 2 Hkv) * D]
    cos: torch.Tensor,  # [T, D]
    sin: torch.Tensor,  # [T, D] ops.rotation_sin of the HF sin
    k_cache: torch.Tensor,  # [Hkv, capacity, D], written in place
    v_cache: torch.Tensor,  # [Hkv, capacity, D], written in place
    positions: torch.Tensor,  # [T] int64
    eps: float,
    num_heads: int,
    num_kv_heads: int,
) -> torch.Tensor:
    """Norm, fused q/k/v projection, RoPE on q and k together, cache write; ``q [Hq, T, D]``."""
    t = x.shape[0]
    head_dim = k_cache.shape[-1]
    h = rms_norm(x, ln_weight, eps)  # [T, H]
    qkv = F.linear(h, qkv_weight, qkv_bias).view(t, num_heads + 2 * num_kv_heads, head_dim)
    qk = apply_rope(qkv[:, : num_heads + num_kv_heads], cos, sin)  # [T, Hq + Hkv, D]
    k_cache.index_copy_(1, positions, qk[:, num_heads:].transpose(0, 1))  # rows of [Hkv, T, D]
    v_cache.index_copy_(1, positions, qkv[:, num_heads + num_kv_heads :].transpose(0, 1))
    return qk[:, :num_heads].transpose(0, 1)  # [Hq, T, D]


def attention_output_and_mlp(
    x: torch.Tensor,  # [T, H] residual stream
    attn: torch.Tensor,  # [Hq, T, D] attention output
    o_weight: torch.Tensor,  # [H, Hq * D]
    o_bias: torch.Tensor | None,
    ln_weight: torch.Tensor,  # [H]
    gate_up_weight: torch.Tensor,  # [2 I, H]
    gate_up_bias: torch.Tensor | None,
    down_weight: torch.Tensor,  # [H, I]
    down_bias: torch.Tensor | None,
    eps: float,
    act: str,
) -> torch.Tensor:
    """Output projection + residual, norm, fused gate/up, activation, down + residual:
    the new residual stream ``[T, H]``."""
    t = x.shape[0]
    a = attn.transpose(0, 1).reshape(t, attn.shape[0] * attn.shape[2])  # [T, Hq * D]
    x = x + F.linear(a, o_weight, o_bias)  # [T, H]
    h = rms_norm(x, ln_weight, eps)
    mid = gated(act, F.linear(h, gate_up_weight, gate_up_bias))  # [T, I]
    return x + F.linear(mid, down_weight, down_bias)


def attention_inputs_any_length(*args: Any) -> torch.Tensor:
    """:func:`attention_inputs` for prefills (compiled with a dynamic token count)."""
    return attention_inputs(*args)


def attention_output_and_mlp_any_length(*args: Any) -> torch.Tensor:
    """:func:`attention_output_and_mlp` for prefills (compiled with a dynamic token count)."""
    return attention_output_and_mlp(*args)
