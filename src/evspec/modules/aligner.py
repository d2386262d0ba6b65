"""The cross-modal aligner (research note §3.2): EventGPT's answer states cross-attend to
Video-LLaVA's projected video features (the tokens the target itself reads), so the draft
can pick up what events cannot show (colour, static objects).

Context = the target's ``[T * P, H_t]`` video features of the clip (``TargetState.extra
['video_features']`` when the prefix cache computed them, else recomputed once per request
by the drafter).  Per position; no self-attention between answer states.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from evspec.modules.adapter_base import HiddenAdapter, check_sizes, input_projection, zero_
from evspec.modules.layers import CrossAttention, RMSNorm, SwiGLU


@dataclass(frozen=True)
class AlignerConfig:
    draft_size: int
    target_size: int
    num_heads: int = 4
    intermediate_size: int = 0  # 0 = 2 x target_size

    def __post_init__(self) -> None:
        check_sizes("AlignerConfig", draft_size=self.draft_size, target_size=self.target_size,
                    num_heads=self.num_heads)
        if self.target_size % self.num_heads:
            raise ValueError(
                f"AlignerConfig.num_heads {self.num_heads} must divide target_size {self.target_size}"
            )
        if self.intermediate_size < 0:
            raise ValueError("AlignerConfig.intermediate_size must be >= 0 (0 = 2 x width)")

    def to_dict(self) -> dict:
        return asdict(self)


class CrossModalAligner(HiddenAdapter):
    kind = "aligner"
    needs_context = True

    def __init__(self, config: AlignerConfig) -> None:
        super().__init__()
        self.config = config
        width = config.target_size
        self.proj = input_projection(config.draft_size, width)
        self.query_norm = RMSNorm(width)
        self.context_norm = RMSNorm(width)
        self.cross = CrossAttention(width, config.num_heads)
        self.mlp_norm = RMSNorm(width)
        self.mlp = SwiGLU(width, config.intermediate_size or 2 * width)
        zero_(self.cross.o_proj)
        zero_(self.mlp.down_proj)

    def forward(self, draft_hidden, context=None, context_mask=None):
        if context is None:
            raise ValueError(
                "the aligner needs the target's video features as context [B, N, H_t] "
                "(collect with --video-features)"
            )
        x = self.proj(draft_hidden)  # [B, T, H_t]
        kv = self.cross.memory_kv(self.context_norm(context.to(x.dtype)))  # [B, h, N, d]
        x = x + self.cross(self.query_norm(x), kv, context_mask)
        x = x + self.mlp(self.mlp_norm(x))
        return x[:, :, None, :]
