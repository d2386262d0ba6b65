"""Attention adapter: decoder blocks with *causal* self-attention over EventGPT's answer
states ``g_0..g_j`` (the research's "L4" attended bidirectionally, which a drafter cannot:
at draft time the future states do not exist yet)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from torch import nn

from evspec.modules.adapter_base import HiddenAdapter, check_sizes, input_projection, zero_
from evspec.modules.layers import Block, causal_mask


@dataclass(frozen=True)
class AttentionAdapterConfig:
    draft_size: int
    target_size: int
    num_layers: int = 1
    num_heads: int = 4
    intermediate_size: int = 0  # 0 = 2 x target_size

    def __post_init__(self) -> None:
        check_sizes("AttentionAdapterConfig", draft_size=self.draft_size,
                    target_size=self.target_size, num_layers=self.num_layers, num_heads=self.num_heads)
        if self.target_size % self.num_heads or (self.target_size // self.num_heads) % 2:
            raise ValueError(
                f"AttentionAdapterConfig.num_heads {self.num_heads} must divide target_size "
                f"{self.target_size} into even head widths"
            )
        if self.intermediate_size < 0:
            raise ValueError("AttentionAdapterConfig.intermediate_size must be >= 0 (0 = 2 x width)")

    def to_dict(self) -> dict:
        return asdict(self)


class AttentionAdapter(HiddenAdapter):
    kind = "attention"
    uses_history = True

    def __init__(self, config: AttentionAdapterConfig) -> None:
        super().__init__()
        self.config = config
        width = config.target_size
        self.proj = input_projection(config.draft_size, width)
        inner = config.intermediate_size or 2 * width
        self.blocks = nn.ModuleList(Block(width, config.num_heads, inner) for _ in range(config.num_layers))
        for blk in self.blocks:  # residual branches start as no-ops: output = input
            zero_(blk.attn.o_proj)
            zero_(blk.mlp.down_proj)

    def forward(self, draft_hidden, context=None, context_mask=None):
        x = self.proj(draft_hidden)  # [B, T, H_t]
        mask = causal_mask(x.shape[1], x.device)  # [T, T]
        for blk in self.blocks:
            x = blk(x, mask)
        return x[:, :, None, :]
