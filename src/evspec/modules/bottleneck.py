"""Bottleneck adapter: a residual down-projection / GELU / up-projection per position
(LoRA-like; the research's "L1"/"L2" levels), after an input projection when the two
models differ in width."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from evspec.modules.adapter_base import HiddenAdapter, check_sizes, input_projection, zero_


@dataclass(frozen=True)
class BottleneckConfig:
    """``rank``: bottleneck width; ``num_blocks``: stacked residual blocks."""

    draft_size: int
    target_size: int
    rank: int = 256
    num_blocks: int = 1
    dropout: float = 0.0

    def __post_init__(self) -> None:
        check_sizes("BottleneckConfig", draft_size=self.draft_size, target_size=self.target_size,
                    rank=self.rank, num_blocks=self.num_blocks)
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"BottleneckConfig.dropout must be in [0, 1), got {self.dropout}")

    def to_dict(self) -> dict:
        return asdict(self)


class _Bottleneck(nn.Module):
    def __init__(self, width: int, rank: int, dropout: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.down = nn.Linear(width, rank, bias=False)
        self.up = nn.Linear(rank, width, bias=False)
        self.drop = nn.Dropout(dropout)
        zero_(self.up)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.up(self.drop(nn.functional.gelu(self.down(self.norm(x)))))


class BottleneckAdapter(HiddenAdapter):
    kind = "bottleneck"

    def __init__(self, config: BottleneckConfig) -> None:
        super().__init__()
        self.config = config
        self.proj = input_projection(config.draft_size, config.target_size)
        self.blocks = nn.ModuleList(
            _Bottleneck(config.target_size, config.rank, config.dropout) for _ in range(config.num_blocks)
        )

    def forward(self, draft_hidden, context=None, context_mask=None):
        x = self.proj(draft_hidden)  # [B, T, H_t]
        for blk in self.blocks:
            x = blk(x)
        return x[:, :, None, :]  # [B, T, 1, H_t]
