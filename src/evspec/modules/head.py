"""The cheap draft head (DESIGN.md §4): ``event-head`` and its peer baseline ``target-head``.

EAGLE-style: at answer position ``j`` the head reads the target's last hidden state
``h_j`` (the state that predicted token ``x_j``) and the embedding of ``x_j``, fuses them
(``fc``), runs 1–2 small decoder blocks over the answer so far and outputs a feature
``f_j`` in the target's hidden space; the target's own (frozen) ``lm_head`` turns ``f_j``
into the distribution of ``x_{j+1}``.  Drafting beyond the last verified position feeds
``f_j`` back as the hidden input of position ``j + 1``.

``event-head`` additionally cross-attends, in every block, to an *event memory*: EventGPT's
pooled event embedding ``[n + P, H_d]`` (``memory_source="events"``: the vision tower and
projector only, no EventGPT LLM pass) or EventGPT's prompt hidden states ``[L_d, H_d]``
(``"prefill"``: one EventGPT prefill per request; richer, question-aware, dearer).  This
is the research note's cross-modal aligner (§3.2) and compression decoder (§6.1) in the
one form that is cheap per token.  ``target-head`` is the same network without memory.

Training-time test (:meth:`DraftHead.forward_train`, ``depth`` > 1): step ``s`` re-runs the
head with the hidden input of position ``j`` replaced by the head's own step ``s - 1``
output at ``j - 1``; its queries see the true keys up to ``j - s`` and their own earlier
steps' keys, exactly the keys the KV cache holds at draft depth ``s + 1``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Literal

import torch
from torch import nn

from evspec.modules.layers import Block, RMSNorm, Rotary, causal_mask

MemorySource = Literal["none", "events", "prefill"]
MEMORY_SOURCES: tuple[str, ...] = ("none", "events", "prefill")


@dataclass(frozen=True)
class HeadConfig:
    """Shape of a draft head.

    ``hidden_size``: the target's hidden width (the head works in the target's space).
    ``memory_size``: EventGPT's hidden width when ``memory_source`` is not ``"none"``.
    ``intermediate_size``: MLP width (0 = ``2 * hidden_size``).  ``max_positions``: the
    longest answer the head caches before it stops drafting.
    """

    hidden_size: int
    num_layers: int = 1
    num_heads: int = 4
    intermediate_size: int = 0
    memory_source: MemorySource = "none"
    memory_size: int = 0
    rope_theta: float = 10000.0
    max_positions: int = 1024
    norm_eps: float = 1e-6

    def __post_init__(self) -> None:
        if self.hidden_size < 1:
            raise ValueError(f"HeadConfig.hidden_size must be >= 1 (the target's width), got {self.hidden_size}")
        if not 1 <= self.num_layers <= 8:
            raise ValueError(f"HeadConfig.num_layers must be in [1, 8] (1–2 keeps c small), got {self.num_layers}")
        if self.num_heads < 1 or self.hidden_size % self.num_heads:
            raise ValueError(
                f"HeadConfig.num_heads {self.num_heads} must divide hidden_size {self.hidden_size}"
            )
        if (self.hidden_size // self.num_heads) % 2:
            raise ValueError(
                f"HeadConfig: head width {self.hidden_size // self.num_heads} must be even "
                "(rotary positions); change num_heads"
            )
        if self.intermediate_size < 0:
            raise ValueError(f"HeadConfig.intermediate_size must be >= 0 (0 = 2 x hidden), got {self.intermediate_size}")
        if self.memory_source not in MEMORY_SOURCES:
            raise ValueError(
                f"HeadConfig.memory_source {self.memory_source!r}; choose one of {MEMORY_SOURCES}"
            )
        if self.memory_source != "none" and self.memory_size < 1:
            raise ValueError(
                "HeadConfig.memory_size must be EventGPT's hidden width when memory_source is "
                f"{self.memory_source!r}; got {self.memory_size}"
            )
        if self.max_positions < 2:
            raise ValueError(f"HeadConfig.max_positions must be >= 2, got {self.max_positions}")

    @property
    def has_memory(self) -> bool:
        return self.memory_source != "none"

    @property
    def inner(self) -> int:
        return self.intermediate_size or 2 * self.hidden_size

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class HeadCache:
    """One request's head state: keys/values per block ``[1, h, capacity, d]`` holding
    ``length`` positions, and the memory's keys/values per block (or None)."""

    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    length: int
    memory_kv: list[tuple[torch.Tensor, torch.Tensor]] | None

    def truncate(self, length: int) -> None:
        """Keep the first ``length`` positions (rollback is a pointer move)."""
        if not 0 <= length <= self.length:
            raise ValueError(f"cannot truncate a head cache of {self.length} positions to {length}")
        self.length = length


class DraftHead(nn.Module):
    """The head network.  Inputs are the target's hidden states and token embeddings
    (the frozen embedding and ``lm_head`` belong to the target, not to the head)."""

    def __init__(self, config: HeadConfig) -> None:
        super().__init__()
        self.config = config
        width = config.hidden_size
        self.fc = nn.Linear(2 * width, width, bias=False)  # [emb(x_j); h_j] -> width
        mem = width if config.has_memory else None
        self.blocks = nn.ModuleList(
            Block(width, config.num_heads, config.inner, memory_width=mem,
                  theta=config.rope_theta, eps=config.norm_eps)
            for _ in range(config.num_layers)
        )
        self.norm = RMSNorm(width, config.norm_eps)
        if config.has_memory:
            self.memory_proj = nn.Linear(config.memory_size, width, bias=False)
            self.memory_norm = RMSNorm(width, config.norm_eps)
        for p in self.parameters():
            if p.ndim == 2:
                nn.init.normal_(p, std=0.02)

    # -- pieces ------------------------------------------------------------------------
    def fuse(self, hidden: torch.Tensor, embeds: torch.Tensor) -> torch.Tensor:
        """``hidden``, ``embeds`` ``[B, T, H]`` -> fused inputs ``[B, T, H]``."""
        return self.fc(torch.cat([embeds, hidden], dim=-1))

    def memory_kv(
        self, memory: torch.Tensor | None
    ) -> list[tuple[torch.Tensor, torch.Tensor]] | None:
        """``memory`` ``[B, M, H_d]`` -> per block keys/values ``[B, h, M, d]``."""
        if not self.config.has_memory:
            return None
        if memory is None:
            raise ValueError(
                f"this head cross-attends to an event memory ({self.config.memory_source}); "
                "pass memory [B, M, H_d]"
            )
        if memory.shape[-1] != self.config.memory_size:
            raise ValueError(
                f"memory width {memory.shape[-1]} != HeadConfig.memory_size {self.config.memory_size}"
            )
        mem = self.memory_norm(self.memory_proj(memory))  # [B, M, H]
        return [blk.cross.memory_kv(mem) for blk in self.blocks]  # type: ignore[union-attr]

    # -- training ----------------------------------------------------------------------
    def forward_train(
        self,
        hidden: torch.Tensor,  # [B, T, H] target hidden h_j (true)
        embeds: torch.Tensor,  # [B, T, H] embeddings of x_j
        *,
        memory: torch.Tensor | None = None,  # [B, M, H_d]
        memory_mask: torch.Tensor | None = None,  # [B, M] bool
        depth: int = 1,
    ) -> list[torch.Tensor]:
        """Outputs ``f`` ``[B, T, H]`` of every training-time-test step ``0..depth-1``.

        Step ``s`` output at ``j`` is the head's prediction of ``h_{j+1}`` when drafting
        token ``s + 1`` of a round whose last verified position is ``j - s``; positions
        ``j < s`` have no such round (callers mask them out of the loss).
        """
        if depth < 1:
            raise ValueError(f"training-time-test depth must be >= 1, got {depth}")
        b, t, _ = hidden.shape
        dev = hidden.device
        mem_kv = self.memory_kv(memory)
        keys: list[list[torch.Tensor]] = [[] for _ in self.blocks]  # per block, per step [B, h, T, d]
        vals: list[list[torch.Tensor]] = [[] for _ in self.blocks]
        outputs: list[torch.Tensor] = []
        h_in = hidden
        for s in range(depth):
            if s > 0:  # position j reads the previous step's prediction made at j - 1
                prev = outputs[-1]
                h_in = torch.cat([torch.zeros_like(prev[:, :1]), prev[:, :-1]], dim=1)  # [B, T, H]
            mask = _ttt_mask(t, s, dev)  # [T, (s + 1) T]
            x = self.fuse(h_in, embeds)
            for i, blk in enumerate(self.blocks):
                q, k, v = blk.self_qkv(x)
                keys[i].append(k)
                vals[i].append(v)
                attn = blk.attn.attend(q, torch.cat(keys[i], dim=2), torch.cat(vals[i], dim=2), mask)
                x = blk.finish(x, attn, None if mem_kv is None else mem_kv[i], memory_mask)
            outputs.append(self.norm(x))
        return outputs

    # -- drafting (one request, incremental) -------------------------------------------
    @torch.no_grad()
    def drafting_memory(
        self, memory: torch.Tensor | None
    ) -> list[tuple[torch.Tensor, torch.Tensor]] | None:
        """One request's memory keys/values per block ``[1, h, M, d]`` from ``memory``
        ``[M, H_d]`` (None for a head without memory): computed once per request (or per
        clip, by the caller), never per drafted token."""
        if not self.config.has_memory:
            return None
        if memory is None:
            raise ValueError("this head needs an event memory [M, H_d] to draft")
        p = self.fc.weight
        return self.memory_kv(memory[None].to(p.device, p.dtype))

    def new_cache(
        self, memory: torch.Tensor | None = None, capacity: int = 64, *,
        memory_kv: list[tuple[torch.Tensor, torch.Tensor]] | None = None,
    ) -> HeadCache:
        """An empty cache; ``memory`` ``[M, H_d]`` for a head with event memory, or its
        precomputed ``memory_kv`` (:meth:`drafting_memory`)."""
        p = self.fc.weight
        h, d = self.config.num_heads, self.config.hidden_size // self.config.num_heads
        shape = (1, h, capacity, d)
        mem_kv = memory_kv
        if self.config.has_memory and mem_kv is None:
            mem_kv = self.drafting_memory(memory)
        return HeadCache(
            keys=[p.new_zeros(shape) for _ in self.blocks],
            values=[p.new_zeros(shape) for _ in self.blocks],
            length=0,
            memory_kv=mem_kv,
        )

    def _reserve(self, cache: HeadCache, needed: int) -> None:
        cap = cache.keys[0].shape[2]
        if needed <= cap:
            return
        new_cap = max(needed, 2 * cap)
        for lst in (cache.keys, cache.values):
            for i, buf in enumerate(lst):
                grown = buf.new_zeros(buf.shape[0], buf.shape[1], new_cap, buf.shape[3])
                grown[:, :, : cache.length] = buf[:, :, : cache.length]
                lst[i] = grown

    def run_blocks(
        self,
        x: torch.Tensor,  # [1, T, H] fused inputs
        cos: torch.Tensor,  # [T, d] rotary tables at the rows' positions
        sin: torch.Tensor,
        mask: torch.Tensor | None,  # bool [T, S]: which attended rows each new row sees
        store: Callable[[int, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
        memory_kv: list | None,
    ) -> torch.Tensor:
        """The drafting pass over the blocks: ``store(i, k, v)`` writes block ``i``'s new
        keys/values ``[1, h, T, d]`` into a cache and returns the keys/values to attend to
        (the eager cache's valid rows, or a fixed-size buffer).  ``memory_kv[i]``: block
        ``i``'s memory keys/values, or its :class:`~evspec.modules.head_fused.FoldedMemory`
        (the cross-attention as two fixed matrices).  Returns features ``[T, H]``."""
        from evspec.modules.head_fused import FoldedMemory, folded_cross

        for i, blk in enumerate(self.blocks):
            attn = blk.attn
            xn = blk.attn_norm(x)
            q = Rotary.rotate(attn._split(attn.q_proj(xn)), cos, sin)
            k = Rotary.rotate(attn._split(attn.k_proj(xn)), cos, sin)
            keys, values = store(i, k, attn._split(attn.v_proj(xn)))
            attn_out = attn.attend(q, keys, values, mask)
            mem = None if memory_kv is None else memory_kv[i]
            if isinstance(mem, FoldedMemory):
                x = folded_cross(x + attn_out, mem)
                x = x + blk.mlp(blk.mlp_norm(x))
            else:
                x = blk.finish(x, attn_out, mem)
        return self.norm(x)[0]

    def _append(self, cache: HeadCache, hidden: torch.Tensor, embeds: torch.Tensor,
                positions: torch.Tensor | None, mask: torch.Tensor | None) -> torch.Tensor:
        """Append ``T`` rows at ``cache.length`` (positions ``positions``, default consecutive)."""
        p = self.fc.weight
        t = int(hidden.shape[0])
        start = cache.length
        if start + t > self.config.max_positions:
            raise ValueError(
                f"draft head cache full: {start} + {t} positions exceed max_positions "
                f"{self.config.max_positions}"
            )
        self._reserve(cache, start + t)
        rotary = self.blocks[0].attn.rotary
        if positions is None:
            cos, sin = rotary.tables(start + t, p.device, p.dtype)
            cos, sin = cos[start : start + t], sin[start : start + t]
        else:
            cos, sin = rotary.tables(int(positions.max()) + 1, p.device, p.dtype)
            pos = positions.to(p.device)
            cos, sin = cos[pos], sin[pos]

        def store(i: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            cache.keys[i][:, :, start : start + t] = k
            cache.values[i][:, :, start : start + t] = v
            return cache.keys[i][:, :, : start + t], cache.values[i][:, :, : start + t]

        x = self.fuse(hidden.to(p.device, p.dtype)[None], embeds.to(p.device, p.dtype)[None])  # [1, T, H]
        out = self.run_blocks(x, cos, sin, mask, store, cache.memory_kv)
        cache.length = start + t
        return out

    @torch.no_grad()
    def extend(self, cache: HeadCache, hidden: torch.Tensor, embeds: torch.Tensor) -> torch.Tensor:
        """Append ``T`` positions with inputs ``hidden``, ``embeds`` ``[T, H]``; returns the
        features ``f`` ``[T, H]`` (``lm_head(f[i])`` is the next-token distribution)."""
        t, start = int(hidden.shape[0]), cache.length
        mask = None if t == 1 else causal_mask(t, self.fc.weight.device, offset=start)  # [T, start + T]
        return self._append(cache, hidden, embeds, None, mask)

    @torch.no_grad()
    def extend_tree(
        self, cache: HeadCache, hidden: torch.Tensor, embeds: torch.Tensor,
        positions: torch.Tensor, mask: torch.Tensor,
    ) -> torch.Tensor:
        """Append ``T`` rows of a token tree: inputs ``hidden``, ``embeds`` ``[T, H]`` at
        ``positions`` ``[T]``; ``mask`` bool ``[T, length + T]`` says which rows each new row
        sees (the committed answer, its ancestors, itself).  Returns features ``[T, H]``."""
        t, start = int(hidden.shape[0]), cache.length
        if tuple(mask.shape) != (t, start + t):
            raise ValueError(f"extend_tree: mask {tuple(mask.shape)}, expected {(t, start + t)}")
        return self._append(cache, hidden, embeds, positions, mask.to(self.fc.weight.device))


def _ttt_mask(t: int, step: int, device: torch.device) -> torch.Tensor:
    """Bool ``[T, (step + 1) T]`` over keys ``[step 0 | step 1 | ... | step s]``: query j of
    step ``s`` sees step-0 keys ``i <= j - s`` and, for ``u = 1..s``, the step-``u`` key at
    ``j - s + u`` (its own earlier drafts).  Rows ``j < s`` keep at least their own key."""
    j = torch.arange(t, device=device)[:, None]  # [T, 1]
    i = torch.arange(t, device=device)[None, :]  # [1, T]
    parts = [i <= j - step]
    for u in range(1, step + 1):
        parts.append(i == j - step + u)
    return torch.cat(parts, dim=1)
