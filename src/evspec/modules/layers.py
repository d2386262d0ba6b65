"""Small transformer parts shared by the trainable modules (LLaMA-style, written out so
that the draft head can run its own KV cache and the training-time-test masks).

Shapes: ``B`` batch, ``T`` query positions, ``S`` key positions, ``D`` model width,
``h`` attention heads of width ``d = D / h``, ``M`` memory positions.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class RMSNorm(nn.Module):
    """Root-mean-square norm with a learned gain (LLaMA's normalisation)."""

    def __init__(self, width: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(width))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return (x32 * self.weight.float()).to(x.dtype)


class Rotary:
    """Rotary position tables ``cos``/``sin`` ``[P, d]``, computed once per (device, dtype)
    and grown on demand (drafting then only indexes them)."""

    def __init__(self, head_dim: int, theta: float) -> None:
        self.head_dim, self.theta = head_dim, theta
        self._tables: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}

    def tables(self, length: int, device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        key = (device, dtype)
        have = self._tables.get(key)
        if have is None or have[0].shape[0] < length:
            size = max(length, 256, 2 * (have[0].shape[0] if have is not None else 0))
            d = self.head_dim
            inv = 1.0 / (self.theta ** (torch.arange(0, d, 2, device=device, dtype=torch.float32) / d))  # [d/2]
            ang = torch.arange(size, device=device, dtype=torch.float32)[:, None] * inv[None]  # [P, d/2]
            have = (torch.cat([ang.cos(), ang.cos()], -1).to(dtype), torch.cat([ang.sin(), ang.sin()], -1).to(dtype))
            self._tables[key] = have
        return have

    @staticmethod
    def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        """Rotate ``x`` ``[B, h, T, d]`` by per-row tables ``cos``/``sin`` ``[T, d]`` (halves
        convention)."""
        half = x.shape[-1] // 2
        return x * cos + torch.cat([-x[..., half:], x[..., :half]], dim=-1) * sin

    def __call__(self, x: torch.Tensor, start: int) -> torch.Tensor:
        """Rotate ``x`` ``[B, h, T, d]`` at positions ``start .. start + T - 1``.  Only
        position differences matter for attention scores."""
        t = x.shape[2]
        cos, sin = self.tables(start + t, x.device, x.dtype)
        return self.rotate(x, cos[start : start + t], sin[start : start + t])


class SelfAttention(nn.Module):
    """Multi-head self-attention with rotary positions; projections and the attention
    itself are separate calls so callers can assemble keys from several passes."""

    def __init__(self, width: int, heads: int, theta: float = 10000.0) -> None:
        super().__init__()
        if width % heads:
            raise ValueError(f"attention width {width} must be divisible by heads {heads}")
        self.heads, self.head_dim = heads, width // heads
        self.rotary = Rotary(self.head_dim, theta)
        self.q_proj = nn.Linear(width, width, bias=False)
        self.k_proj = nn.Linear(width, width, bias=False)
        self.v_proj = nn.Linear(width, width, bias=False)
        self.o_proj = nn.Linear(width, width, bias=False)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        return x.view(b, t, self.heads, self.head_dim).transpose(1, 2)  # [B, h, T, d]

    def qkv(self, x: torch.Tensor, start: int = 0) -> tuple[torch.Tensor, ...]:
        """``x`` ``[B, T, D]`` at positions ``start..`` -> ``q, k, v`` each ``[B, h, T, d]``
        (rotary on q and k)."""
        q = self.rotary(self._split(self.q_proj(x)), start)
        k = self.rotary(self._split(self.k_proj(x)), start)
        return q, k, self._split(self.v_proj(x))

    def attend(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None
    ) -> torch.Tensor:
        """``q`` ``[B, h, T, d]`` over ``k, v`` ``[B, h, S, d]``; ``mask`` bool ``[T, S]`` or
        ``[B, 1, T, S]`` (True = may attend) -> ``[B, T, D]``."""
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # [B, h, T, d]
        b, _, t, _ = out.shape
        return self.o_proj(out.transpose(1, 2).reshape(b, t, -1))


class CrossAttention(nn.Module):
    """Queries from the sequence, keys/values from a memory of another width (no
    positions: the memory is a set, e.g. pooled event tokens)."""

    def __init__(self, width: int, heads: int, memory_width: int | None = None) -> None:
        super().__init__()
        if width % heads:
            raise ValueError(f"attention width {width} must be divisible by heads {heads}")
        mem = width if memory_width is None else memory_width
        self.heads, self.head_dim = heads, width // heads
        self.q_proj = nn.Linear(width, width, bias=False)
        self.k_proj = nn.Linear(mem, width, bias=False)
        self.v_proj = nn.Linear(mem, width, bias=False)
        self.o_proj = nn.Linear(width, width, bias=False)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        return x.view(b, t, self.heads, self.head_dim).transpose(1, 2)

    def memory_kv(self, memory: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``memory`` ``[B, M, D_m]`` -> keys, values ``[B, h, M, d]`` (computed once per request)."""
        return self._split(self.k_proj(memory)), self._split(self.v_proj(memory))

    def forward(
        self,
        x: torch.Tensor,  # [B, T, D]
        kv: tuple[torch.Tensor, torch.Tensor],  # [B, h, M, d] each
        memory_mask: torch.Tensor | None = None,  # [B, M] bool, True = real memory slot
    ) -> torch.Tensor:
        q = self._split(self.q_proj(x))  # [B, h, T, d]
        mask = None if memory_mask is None else memory_mask[:, None, None, :]  # [B, 1, 1, M]
        out = F.scaled_dot_product_attention(q, kv[0], kv[1], attn_mask=mask)
        b, _, t, _ = out.shape
        return self.o_proj(out.transpose(1, 2).reshape(b, t, -1))


class SwiGLU(nn.Module):
    """LLaMA's gated MLP."""

    def __init__(self, width: int, inner: int) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(width, inner, bias=False)
        self.up_proj = nn.Linear(width, inner, bias=False)
        self.down_proj = nn.Linear(inner, width, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nn.Module):
    """Pre-norm decoder block: causal self-attention, optional cross-attention to a
    memory, gated MLP.  ``self_qkv`` and ``finish`` split the block around the attention
    so the caller decides which keys each query sees (KV cache, training-time test)."""

    def __init__(
        self, width: int, heads: int, inner: int, *, memory_width: int | None = None,
        theta: float = 10000.0, eps: float = 1e-6,
    ) -> None:
        super().__init__()
        self.attn_norm = RMSNorm(width, eps)
        self.attn = SelfAttention(width, heads, theta)
        self.cross = None
        if memory_width is not None:
            self.cross_norm = RMSNorm(width, eps)
            self.cross = CrossAttention(width, heads, memory_width)
        self.mlp_norm = RMSNorm(width, eps)
        self.mlp = SwiGLU(width, inner)

    def self_qkv(self, x: torch.Tensor, start: int = 0) -> tuple[torch.Tensor, ...]:
        return self.attn.qkv(self.attn_norm(x), start)

    def finish(
        self,
        x: torch.Tensor,  # [B, T, D] block input
        attn_out: torch.Tensor,  # [B, T, D] self-attention output
        memory_kv: tuple[torch.Tensor, torch.Tensor] | None = None,
        memory_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        x = x + attn_out
        if self.cross is not None:
            if memory_kv is None:
                raise ValueError("this block cross-attends to a memory, but none was given")
            x = x + self.cross(self.cross_norm(x), memory_kv, memory_mask)
        return x + self.mlp(self.mlp_norm(x))

    def forward(
        self,
        x: torch.Tensor,  # [B, T, D] at positions 0..T-1
        mask: torch.Tensor | None,  # [T, T] or [B, 1, T, T] bool
        memory_kv: tuple[torch.Tensor, torch.Tensor] | None = None,
        memory_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        q, k, v = self.self_qkv(x)
        return self.finish(x, self.attn.attend(q, k, v, mask), memory_kv, memory_mask)


def causal_mask(t: int, device: torch.device | str, offset: int = 0) -> torch.Tensor:
    """Bool ``[t, offset + t]``: query i (absolute position offset + i) sees keys <= it."""
    q = torch.arange(t, device=device)[:, None] + offset
    k = torch.arange(offset + t, device=device)[None, :]
    return k <= q
