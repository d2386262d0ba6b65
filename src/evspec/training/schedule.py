"""The learning-rate schedule of every training run: linear warm-up, then a cosine decay
to a floor.

Each task keeps the floor its shipped results were trained with: the world models decay
to ``WorldTrainConfig.min_lr_ratio`` (5 %), drafter modules to ``TrainConfig.min_lr_ratio``
(10 %).
"""

from __future__ import annotations

import math


def warmup_cosine(step: int, warmup: int, total: int, floor: float, *,
                  progress: float = 0.0, base: float = 1.0) -> float:
    """The LR at optimiser step ``step`` (0-based) for a base LR ``base`` (1: the factor
    a ``LambdaLR`` takes): ``base * (step + 1) / warmup`` during the warm-up, then
    ``base * (floor + (1 - floor) * (1 + cos(pi * x)) / 2`` with ``x`` the fraction of the
    steps after warm-up done (1 at ``total``), or ``progress`` when that is further (a time
    budget's elapsed fraction)."""
    if step < warmup:
        return base * (step + 1) / warmup
    span = max(1, total - warmup)
    x = min(1.0, max((step - warmup) / span, progress))
    return base * (floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * x)))
