"""`evspec bench --drafter-path NAME=FOLDER|untrained`: trained drafters from any checkpoint
folder, and random heads of the right shapes for acceptance-controlled timing at a scale
where no trained head exists (the 7B shapes)."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from evspec.bench.config import BenchConfig
from evspec.bench.run import ModelSpec, bench, drafter_options
from evspec.cli import app
from evspec.decoding.drafters import DrafterError, checkpoint_option, make_drafter
from evspec.decoding.engine import generate
from evspec.models.eventgpt import EventGPT
from evspec.models.target import VideoLlavaTarget
from evspec.loading import random_images
from evspec.models.request import Request


def test_checkpoint_option_names() -> None:
    assert checkpoint_option("event-head") == "head_path"
    assert checkpoint_option("target-head@seed2") == "head_path"
    assert checkpoint_option("eventgpt-lora") == "lora_path"
    assert checkpoint_option("eventgpt-adapter") == "adapter_path"
    with pytest.raises(ValueError, match="no trained module"):
        checkpoint_option("eventgpt")


def test_drafter_options_from_pairs(tmp_path) -> None:
    assert drafter_options((("event-head", "untrained"), ("target-head@a", str(tmp_path)))) == {
        "event-head": {"head_path": "untrained"}, "target-head@a": {"head_path": str(tmp_path)}}
    with pytest.raises(FileNotFoundError, match="no such checkpoint folder"):
        drafter_options((("event-head", str(tmp_path / "nope")),))
    with pytest.raises(ValueError, match="twice"):
        drafter_options((("event-head", "untrained"), ("event-head", "untrained")))


def test_untrained_heads_draft_losslessly_with_the_right_shapes() -> None:
    target = VideoLlavaTarget.from_preset("tiny-random", seed=0)
    eventgpt = EventGPT.from_preset("tiny-random", seed=1)
    size = target.config.vision_config.image_size
    req = Request("What is moving?", random_images(target.num_frames, size, 0),
                  random_images(eventgpt.n_event_images, eventgpt.config.image_size, 1))
    base = generate(target, req, None, max_new_tokens=8)
    for name in ("event-head", "target-head"):
        drafter = make_drafter(name, target=target, draft_model=eventgpt, head_path="untrained")
        head = drafter.head
        assert head.config.hidden_size == target.lm_head.weight.shape[1]
        assert head.config.has_memory == (name == "event-head")
        assert generate(target, req, drafter, gamma=3, max_new_tokens=8).tokens == base.tokens
        again = make_drafter(name, target=target, draft_model=eventgpt, head_path="untrained").head
        assert all(torch.equal(a, b) for a, b in zip(head.state_dict().values(), again.state_dict().values()))
    with pytest.raises(DrafterError, match="trained checkpoint"):
        make_drafter("eventgpt-adapter", target=target, draft_model=eventgpt, adapter_path="untrained")


def test_untrained_needs_the_controlled_mode(tmp_path) -> None:
    spec = ModelSpec(target="tiny-random", device="cpu")
    paths = (("target-head", "untrained"),)
    cfg = BenchConfig(drafters=("none", "target-head"), gammas=(2,), max_new_tokens=5, warmup=0,
                      hf_baseline=False, dataset="random:1")
    with pytest.raises(ValueError, match="controlled-alpha"):
        bench(cfg, tmp_path / "a", spec, report=False, progress=False, drafter_paths=paths)
    other = BenchConfig(drafters=("none",), gammas=(2,), max_new_tokens=5, warmup=0, hf_baseline=False,
                        dataset="random:1", controlled_alpha=0.5)
    with pytest.raises(ValueError, match="not in --drafters"):
        bench(other, tmp_path / "b", spec, report=False, progress=False, drafter_paths=paths)


def test_cli_times_untrained_heads_under_controlled_acceptance(tmp_path) -> None:
    out = tmp_path / "run"
    args = ["bench", "--dataset", "random:2", "--out", str(out), "--drafters", "none,event-head,target-head",
            "--gamma", "2", "--max-new-tokens", "6", "--device", "cpu", "--no-hf-baseline", "--no-report",
            "--controlled-alpha", "0.7", "--drafter-path", "event-head=untrained",
            "--drafter-path", "target-head=untrained"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    heads = [r for r in records if r["drafter"] in ("event-head", "target-head")]
    assert len(heads) == 4 and all(r["status"] == "ok" and r["matches_target"] for r in heads)
    assert any(r["accepted"] > 0 for r in heads)  # the controlled stream accepts some drafts
    run = json.loads((out / "run.json").read_text())
    assert run["backend"]["drafter_paths"] == {"event-head": "untrained", "target-head": "untrained"}

    bad = CliRunner().invoke(app, args[:-4] + ["--drafter-path", "event-head"])
    assert bad.exit_code == 2 and "NAME=VALUE" in bad.output
