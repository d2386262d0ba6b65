"""Fixtures for the adapter/head tests: a micro world, the tiny random presets, and one
collected data folder (train, val, test), each built once per session."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

# tiny models are dispatch-bound: extra intra-op threads only contend
torch.set_num_threads(1)

from heads_helpers import MAX_NEW, fresh_eventgpt, fresh_target, train_config


@pytest.fixture(scope="session")
def micro_world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An 8-clip world at 32 px (about 50 questions); returns its manifest path."""
    from evspec.data.world.config import WorldConfig
    from evspec.data.world.generate import generate_world
    from evspec.data.world.scene import SceneConfig

    out = tmp_path_factory.mktemp("heads_world") / "w"
    generate_world(out, 8, seed=1, cfg=WorldConfig(scene=SceneConfig(resolution=32)),
                   progress=False, tokenizer=False)
    return out / "manifest.json"


@pytest.fixture(scope="session")
def target():
    return fresh_target()


@pytest.fixture(scope="session")
def eventgpt():
    return fresh_eventgpt()


@pytest.fixture(scope="session")
def collected(tmp_path_factory, micro_world, target, eventgpt) -> Path:
    """Every train/val/test question of the micro world, fp32, with EventGPT's prompt
    states and the target's video features."""
    from evspec.training.heads.collect import CollectConfig, collect

    out = tmp_path_factory.mktemp("heads_data") / "d"
    for split, limit in (("train", 28), ("val", 7), ("test", 7)):
        cfg = CollectConfig(split=split, limit=limit, max_new_tokens=MAX_NEW, chunk_size=16,
                            store_dtype="float32", prefill_memory=True, video_features=True, canvas="sensor")
        collect(cfg, target, eventgpt, micro_world, out, progress=False)
    return out


@pytest.fixture(scope="session")
def trained(collected, tmp_path_factory) -> dict[str, Path]:
    """Every module kind trained for TRAIN_STEPS on the micro data: kind -> run folder
    (``best/``, ``last/``, ``history.jsonl``, ``loss.png``)."""
    from evspec.modules.checkpoint import MODULE_KINDS
    from evspec.training.heads.train import train

    root = tmp_path_factory.mktemp("heads_runs")
    for kind in MODULE_KINDS:
        train(train_config(kind), collected, root / kind,
              draft_model=fresh_eventgpt() if kind == "lora" else None, progress=False)
    return {kind: root / kind for kind in MODULE_KINDS}


@pytest.fixture(scope="session")
def ckpts(trained) -> dict[str, Path]:
    """kind -> the last checkpoint of its micro training run."""
    return {kind: run / "last" for kind, run in trained.items()}


@pytest.fixture(scope="session")
def world_items(micro_world, target, eventgpt):
    """The micro world's test and val questions as loadable request items."""
    from evspec.training.heads.requests import manifest_requests

    return manifest_requests(micro_world, ("test", "val"), num_frames=target.num_frames,
                             n_event_images=eventgpt.n_event_images, canvas="sensor")


@pytest.fixture(scope="session")
def requests(world_items):
    """Two held-out requests on different clips (the first test and the last val question)."""
    return [world_items[0].load(), world_items[-1].load()]
