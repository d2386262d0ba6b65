"""Shape options of a new drafter module and the config dict they give for data of given
dims: what training builds, and what an untrained head of the same shapes is built from."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from evspec.modules.checkpoint import HEAD_KINDS, MODULE_KINDS
from evspec.modules.lora import PROJECTIONS, LoraSpec


@dataclass(frozen=True)
class ModuleOptions:
    """Shape options (0 = a default derived from the data's dims).

    ``num_layers``/``num_heads``/``intermediate_size``: attention adapter, aligner, heads;
    ``rank``: bottleneck width or LoRA rank; ``expand``: note adapter slots;
    ``memory_source``: event-head memory (``events`` or ``prefill``);
    ``lora_alpha``/``lora_targets``: LoRA scaling and projections.
    """

    num_layers: int = 1
    num_heads: int = 0
    intermediate_size: int = 0
    rank: int = 0
    expand: int = 4
    memory_source: str = "events"
    lora_alpha: float = 0.0
    lora_targets: tuple[str, ...] = PROJECTIONS

    def __post_init__(self) -> None:
        if self.memory_source not in ("events", "prefill"):
            raise ValueError(f"ModuleOptions.memory_source {self.memory_source!r}: "
                             "use events or prefill")
        for name in ("num_layers", "num_heads", "intermediate_size", "rank"):
            if getattr(self, name) < 0:
                raise ValueError(f"ModuleOptions.{name} must be >= 0 (0 = default)")


def _heads_for(width: int, asked: int) -> int:
    if asked:
        return asked
    heads = max(1, width // 64)  # head width 64 where possible
    while width % heads or (width // heads) % 2:
        heads -= 1
    return max(heads, 1)


def module_config(kind: str, dims: dict[str, Any], options: ModuleOptions) -> dict[str, Any]:
    """The config dict of a new ``kind`` module for data with ``dims``."""
    ht, hd = int(dims["target_hidden"]), int(dims["draft_hidden"])
    if kind == "note-adapter":
        return {"draft_size": hd, "target_size": ht, "expand": options.expand}
    if kind == "bottleneck":
        return {"draft_size": hd, "target_size": ht,
                "rank": options.rank or min(256, max(8, ht // 4)),
                "num_blocks": options.num_layers}
    if kind == "attention":
        return {"draft_size": hd, "target_size": ht, "num_layers": options.num_layers,
                "num_heads": _heads_for(ht, options.num_heads),
                "intermediate_size": options.intermediate_size}
    if kind == "aligner":
        return {"draft_size": hd, "target_size": ht,
                "num_heads": _heads_for(ht, options.num_heads),
                "intermediate_size": options.intermediate_size}
    if kind in HEAD_KINDS:
        event = kind == "event-head"
        return {"hidden_size": ht, "num_layers": options.num_layers,
                "num_heads": _heads_for(ht, options.num_heads),
                "intermediate_size": options.intermediate_size,
                "memory_source": options.memory_source if event else "none",
                "memory_size": hd if event else 0}
    if kind == "lora":
        rank = options.rank or 16
        return LoraSpec(rank=rank, alpha=options.lora_alpha or 2.0 * rank,
                        target_modules=tuple(options.lora_targets)).to_dict()
    raise ValueError(f"unknown module kind {kind!r}; choose one of {', '.join(MODULE_KINDS)}")
