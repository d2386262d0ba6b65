"""The one LR schedule: warm-up, cosine to a floor; a time budget only moves the decay on."""

from __future__ import annotations

import pytest

from evspec.training.heads.train import TrainConfig, _lr_at
from evspec.training.schedule import warmup_cosine
from evspec.training.world.config import WorldTrainConfig


def test_schedule_warms_up_then_decays_to_the_floor() -> None:
    f = [warmup_cosine(s, warmup=10, total=100, floor=0.1) for s in range(101)]
    assert f[0] == pytest.approx(0.1) and f[9] == pytest.approx(1.0)
    assert all(x >= y for x, y in zip(f[10:], f[11:]))
    assert f[100] == pytest.approx(0.1)


def test_progress_ends_the_decay_early_and_base_scales() -> None:
    assert warmup_cosine(20, 10, 100, 0.05, progress=1.0) == pytest.approx(0.05)
    mid = warmup_cosine(55, 10, 100, 0.0)
    assert warmup_cosine(55, 10, 100, 0.0, progress=0.2) == mid  # the step count is further
    assert warmup_cosine(55, 10, 100, 0.0, base=3e-3) == pytest.approx(3e-3 * mid)


def test_each_task_keeps_its_floor() -> None:
    """The shipped world models decayed to 5 %, the shipped modules to 10 %."""
    assert WorldTrainConfig.__dataclass_fields__["min_lr_ratio"].default == 0.05
    cfg = TrainConfig(kind="target-head", steps=100, lr=1e-3, warmup_steps=10)
    assert cfg.min_lr_ratio == 0.1
    assert _lr_at(100, cfg) == pytest.approx(1e-4)
    assert _lr_at(3, cfg) == 1e-3 * 4 / 10
