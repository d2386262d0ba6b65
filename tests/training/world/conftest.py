"""Fixtures for the training tests: a micro world (12 clips at 16 px) and micro training
runs of both models, each built once per session."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from training_helpers import micro_config

# tiny models are dispatch-bound: extra intra-op threads only contend
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def micro_world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """12 clips at 16 px (train 10, val 1, test 1), generated in this process."""
    from evspec.data.world.config import WorldConfig
    from evspec.data.world.generate import generate_world
    from evspec.data.world.scene import SceneConfig

    out = tmp_path_factory.mktemp("micro_world") / "world"
    cfg = WorldConfig(scene=SceneConfig(resolution=16), render_hz=100)
    generate_world(out, 12, seed=5, cfg=cfg, workers=1, progress=False)
    return out


@pytest.fixture(scope="session")
def micro_runs(micro_world: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Run folders of a short micro training of the target and of the drafter."""
    from evspec.training.world.loop import train_world_model

    root = tmp_path_factory.mktemp("micro_runs")
    runs = {}
    for role in ("target", "drafter"):
        cfg = micro_config(micro_world, root / role, role, steps=30)
        train_world_model(cfg, progress=False)
        runs[role] = root / role
    return runs
