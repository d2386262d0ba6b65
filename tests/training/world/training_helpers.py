"""Helpers shared by the training tests (imported as a plain module, like world_scenes)."""

from __future__ import annotations

from pathlib import Path

from evspec.training.world.config import WorldTrainConfig


def micro_config(data: Path, out: Path, role: str, **overrides) -> WorldTrainConfig:
    """A CPU-sized training config on the micro world."""
    base = dict(
        role=role, data=data, out=out, preset="world-micro", steps=12, batch_size=8, lr=3e-3,
        warmup_steps=2, eval_interval=1000, val_generate=2, val_batches=1,
        checkpoint_interval=1000, log_interval=1, seed=0 if role == "target" else 1,
        device="cpu", amp="off", workers=1, max_new_tokens=6,
    )
    base.update(overrides)
    return WorldTrainConfig(**base)
