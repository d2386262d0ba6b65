"""Resuming a module's training: the same batches as an uninterrupted run, other settings
refused unless allowed, the written config reads back."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

from evspec.training.heads.store import CollectedData
from evspec.training.heads.train import (
    CONFIG_FILE, TrainConfig, _batch_stream, make_task, train,
)
from evspec.modules.options import module_config
from heads_helpers import train_config


def test_a_resumed_stream_continues_the_batch_order(collected):
    data = CollectedData.open(collected)
    cfg = train_config("target-head")
    task = make_task(cfg.kind, module_config(cfg.kind, data.dims, cfg.options), data,
                     cfg.loss_weights, device=torch.device("cpu"), depth=cfg.depth)
    per_epoch = -(-data.count("train") // cfg.batch_size)
    whole = _batch_stream(data, task, cfg, torch.device("cpu"))
    straight = [next(whole).tokens for _ in range(2 * per_epoch + 2)]
    for start in (1, per_epoch, per_epoch + 1):
        resumed = _batch_stream(data, task, cfg, torch.device("cpu"), start_step=start)
        again = [next(resumed).tokens for _ in range(len(straight) - start)]
        assert all(torch.equal(a, b) for a, b in zip(again, straight[start:])), start


def test_resume_refuses_other_settings_and_config_reads_back(collected, tmp_path):
    out = tmp_path / "th"
    cfg = train_config("target-head", steps=4)
    train(cfg, collected, out, progress=False)
    written = json.loads((out / CONFIG_FILE).read_text())
    assert TrainConfig.from_dict(written) == replace(cfg, weights=cfg.loss_weights)
    with pytest.raises(ValueError, match=r"seed = 7 \(the run's: 0\).*--allow-changes"):
        train(replace(cfg, steps=6, seed=7), collected, out, progress=False)
    with pytest.raises(ValueError, match="batch_size"):
        train(replace(cfg, steps=6, batch_size=4), collected, out, progress=False)
    assert train(replace(cfg, steps=6), collected, out, progress=False).steps == 6  # steps may grow
    done = train(replace(cfg, steps=8, seed=7), collected, out, progress=False, allow_changes=True)
    assert done.steps == 8
