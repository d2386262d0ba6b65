"""Attention of one pass over the static cache: how it is masked (:class:`AttentionPlan`,
decided once per pass and shared by every layer) and which kernel runs it
(:class:`StepAttention`, one per :class:`~evspec.models.fast.llama.FastLlama`).

Masking: from position 0 over exactly ``T`` rows, plain causal SDPA (the flash kernel); a
Python ``start`` over exactly ``start + T`` rows, lower-right causal (flash/efficient
kernels, no mask tensor; one query: no mask at all); otherwise (a device ``start`` or
padded rows) an additive ``[T, kv_len]`` mask built on the device from the positions —
unless split-KV attention serves the pass, which masks from the positions itself (no mask
kernels in the step).  Whatever the form, key ``j`` is visible to query ``i`` iff
``j <= positions[i]``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn import functional as F
from torch.nn.attention.bias import CausalBias

from evspec.models.fast.decode_attention import EXACT_QUERIES, fits, split_kv_attention
from evspec.models.fast.ops import attention_bias, lower_right_causal
from evspec.models.fast.triton_support import available as triton_available

#: attention over the cache for masked steps (exact-length passes always use SDPA's
#: causal forms): ``sdpa`` = ``scaled_dot_product_attention`` with an additive mask (a
#: fused kernel); ``matmul`` = two batched matmuls + float32 softmax (HF eager numerics);
#: ``splitkv`` = split-KV attention (:mod:`.decode_attention`: Triton kernels on CUDA, a torch
#: reference elsewhere); ``auto`` = ``splitkv`` where Triton runs, else ``sdpa`` for one query
#: and ``matmul`` for several.  On the H200 at 7B shapes, compiled step (benchmarks/
#: fast_engine.md): decode 4.77 ms splitkv, 4.99 sdpa, 5.31 matmul; 9-token score
#: 5.23 splitkv, 5.79 matmul, 6.25 sdpa.
ATTENTION_KINDS = ("sdpa", "matmul", "auto", "splitkv")


@dataclass(frozen=True, eq=False)
class AttentionPlan:
    """How one pass attends: query ``positions`` ``[T]`` (device), cache rows ``kv_len``,
    and either ``is_causal`` (from position 0), a lower-right :class:`CausalBias`, an
    additive mask ``[T, kv_len]``, or no mask (every row visible); ``split_kv``: split-KV
    attention serves the pass, masking from the positions (no mask tensor); ``exact``: the
    row-invariant kind of it (:func:`~.decode_attention.split_kv_attention` with ``exact``)."""

    positions: torch.Tensor
    kv_len: int
    mask: torch.Tensor | CausalBias | None
    is_causal: bool = False
    split_kv: bool = False
    exact: bool = False


class StepAttention:
    """The attention of one model: ``kind`` (one of :data:`ATTENTION_KINDS`) for masked
    passes, SDPA's causal forms for exact-length ones.  ``exact``: masked passes of up to
    :data:`~.decode_attention.EXACT_QUERIES` tokens (every decode and score step) run
    row-invariant attention instead, whatever ``kind``: a query's output depends on its
    position and the cache only (split-KV in chunks from position 0, Triton kernels where
    they run, :func:`~.decode_attention.chunked_attention` elsewhere)."""

    def __init__(self, kind: str, num_heads: int, num_kv_heads: int, head_dim: int, scale: float,
                 exact: bool = False) -> None:
        if kind not in ATTENTION_KINDS:
            raise ValueError(f"FastLlama attention must be one of {', '.join(ATTENTION_KINDS)}, got {kind!r}")
        self.kind, self.exact = kind, bool(exact)
        self.num_heads, self.num_kv_heads, self.head_dim, self.scale = num_heads, num_kv_heads, head_dim, scale
        self._aranges: dict[tuple[int, torch.device], torch.Tensor] = {}  # 0..T-1 per step size, made once

    def plan(
        self, start: int | torch.Tensor, t: int, kv_len: int | None, capacity: int, dtype: torch.dtype,
        device: torch.device,
    ) -> AttentionPlan:
        """Positions and masking of a pass of ``t`` tokens at ``start`` (module docstring)."""
        if isinstance(start, torch.Tensor):
            if kv_len is None:
                raise ValueError("kv_len is required when start is a device tensor")
            if start.numel() != 1:
                raise ValueError(f"a device start must hold one position, got shape {tuple(start.shape)}")
            positions = start.reshape(()) + self._arange(t, device)  # [T]
            return self._masked(positions, kv_len, dtype)
        kv_len = start + t if kv_len is None else kv_len
        if not start + t <= kv_len <= capacity:
            raise ValueError(
                f"kv_len {kv_len} must cover the new positions (start {start} + {t}) and "
                f"fit the cache capacity {capacity}"
            )
        positions = torch.arange(start, start + t, device=device)  # [T]
        if kv_len == start + t:
            if start == 0 and t > 1:
                return AttentionPlan(positions, kv_len, None, is_causal=True)
            if t == 1:  # one query at the end sees every row
                return AttentionPlan(positions, kv_len, None, split_kv=self._split_kv_serves(1, device))
            if self.kernel_for(t, device) == "sdpa" and self.num_kv_heads == self.num_heads:
                return AttentionPlan(positions, kv_len, lower_right_causal(t, kv_len))
        return self._masked(positions, kv_len, dtype)

    def _masked(self, positions: torch.Tensor, kv_len: int, dtype: torch.dtype) -> AttentionPlan:
        """A pass that needs masking: row-invariant in exact mode, by split-KV where it serves
        the pass, else the mask."""
        if self.exact and int(positions.shape[0]) <= EXACT_QUERIES:
            return AttentionPlan(positions, kv_len, None, exact=True)
        if self._split_kv_serves(int(positions.shape[0]), positions.device):
            return AttentionPlan(positions, kv_len, None, split_kv=True)
        return AttentionPlan(positions, kv_len, attention_bias(positions, kv_len, dtype))

    def _split_kv_fits(self, queries: int) -> bool:
        return fits(self.num_heads, self.num_kv_heads, queries, self.head_dim)

    def _split_kv_serves(self, queries: int, device: torch.device) -> bool:
        """Whether split-KV attends a (not from-0 causal) pass of ``queries`` tokens."""
        return self.kernel_for(queries, device) == "splitkv" and self._split_kv_fits(queries)

    def _arange(self, t: int, device: torch.device) -> torch.Tensor:
        key = (t, device)
        if key not in self._aranges:  # kept: CUDA graphs captured with it read it at every replay
            self._aranges[key] = torch.arange(t, device=device)
        return self._aranges[key]

    def kernel_for(self, queries: int, device: torch.device) -> str:
        """The kernel (``sdpa``, ``matmul`` or ``splitkv``) a masked pass of ``queries`` tokens
        on ``device`` uses."""
        if self.kind == "auto":
            if triton_available(device) and self._split_kv_fits(queries):
                return "splitkv"
            return "sdpa" if queries == 1 else "matmul"
        return self.kind

    def attend(
        self,
        q: torch.Tensor,  # [Hq, T, D]
        keys: torch.Tensor,  # [Hkv, S, D]
        vals: torch.Tensor,  # [Hkv, S, D]
        plan: AttentionPlan,
    ) -> torch.Tensor:
        """Attention of ``q`` over the attended cache rows per ``plan`` -> ``[Hq, T, D]``."""
        if plan.exact:
            q = q if q.stride(-1) == 1 else q.contiguous()
            return split_kv_attention(q, keys, vals, plan.positions[:1], plan.kv_len, self.scale,
                                      exact=True)
        if plan.split_kv:  # key j visible to query i iff j <= positions[i]
            # the kernels take q's head and token strides: only the last dimension must be dense
            # (q of a score step is a [T, Hq, D] view: no copy, 0.09 ms a 7B score step)
            q = q if q.stride(-1) == 1 else q.contiguous()
            return split_kv_attention(q, keys, vals, plan.positions, plan.kv_len, self.scale)
        if self.kernel_for(q.shape[1], q.device) == "matmul" and not plan.is_causal and not isinstance(plan.mask, CausalBias):
            return self._matmul(q, keys, vals, plan.mask)
        return F.scaled_dot_product_attention(
            q[None], keys[None], vals[None],  # [1, heads, len, D]
            attn_mask=plan.mask,
            is_causal=plan.is_causal,
            scale=self.scale,
            enable_gqa=self.num_kv_heads != self.num_heads,
        )[0]  # [Hq, T, D]

    def _matmul(
        self,
        q: torch.Tensor,  # [Hq, T, D]
        keys: torch.Tensor,  # [Hkv, S, D]
        vals: torch.Tensor,  # [Hkv, S, D]
        mask: torch.Tensor | None,  # [T, S] additive (0 / -inf)
    ) -> torch.Tensor:
        """Attention as two batched matmuls and a float32 softmax (HF's eager attention
        numerics).  For a few queries over a long cache this reads K and V once with
        every SM busy, where a fused kernel may run one block per head."""
        groups = self.num_heads // self.num_kv_heads
        t = q.shape[1]
        qg = q.reshape(self.num_kv_heads, groups * t, self.head_dim)  # [Hkv, g*T, D]
        scores = torch.matmul(qg, keys.transpose(1, 2)) * self.scale  # [Hkv, g*T, S]
        scores = scores.view(self.num_kv_heads, groups, t, -1)  # [Hkv, g, T, S]
        if mask is not None:
            scores = scores + mask
        probs = torch.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype)
        out = torch.matmul(probs.view(self.num_kv_heads, groups * t, -1), vals)  # [Hkv, g*T, D]
        return out.view(self.num_heads, t, self.head_dim)  # [Hq, T, D]
