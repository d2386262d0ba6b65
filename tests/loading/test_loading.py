"""The one loader (evspec.loading): the spec's validation, the draft model the drafters
need, what load_models builds, the clip sizes it derives, and the world flag declared by
the checkpoint's config rather than guessed from a name."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from evspec.loading import (
    ClipSizes, ModelSpec, is_world_model, load_inputs, load_models, world_assets,
)
from evspec.models.eventgpt import EventGPT

WORLD = world_assets()


@pytest.fixture(scope="module")
def loaded():
    spec = ModelSpec(target="tiny-random", draft_model="tiny-random", device="cpu",
                     dtype="float32", seed=3, prefix_cache=True)
    return load_models(spec)


@pytest.mark.parametrize("fields, message", [
    ({"dtype": "float64"}, "--dtype must be one of"),
    ({"device": "gpu"}, "--device 'gpu': not a device"),
    ({"draft_device": "cuda:x"}, "not a device: use auto, cpu, cuda or cuda:N"),
    ({"quant": "8bit"}, "quant '8bit' is not supported; choose one of none, 4bit"),
    ({"compile": True}, "--compile compiles the fast engine: add --fast"),
    ({"kernels": "triton"}, "runs in the fast engine: add --fast"),
    ({"target": None}, "names no model"),
    ({"target": " "}, "must be a preset name or a folder"),
    ({"seed": 1.5}, "seed must be an integer"),
    ({"quant": "4bit", "fast": True}, "quant='4bit' runs on the dynamic path"),
])
def test_a_bad_spec_says_what_to_change(fields, message) -> None:
    with pytest.raises(ValueError, match=message):
        ModelSpec(**fields)


def test_spec_takes_paths_and_places_models(tmp_path: Path) -> None:
    spec = ModelSpec(target=tmp_path, draft_model=tmp_path / "d", device="cpu",
                     draft_device="meta")
    assert (spec.target, spec.draft_model) == (str(tmp_path), str(tmp_path / "d"))
    assert spec.placement == ("cpu", "meta")
    assert ModelSpec(device="cpu").placement == ("cpu", "cpu")


def test_the_draft_model_follows_the_drafters(tmp_path: Path) -> None:
    preset = ModelSpec(target="tiny-random")
    assert preset.for_drafters(("none", "prompt-lookup")).draft_model is None
    assert preset.for_drafters(("none", "eventgpt")).draft_model == "tiny-random"
    assert ModelSpec(target="world").for_drafters(["event-head"]).draft_model == "world"
    named = ModelSpec(target=str(tmp_path), draft_model="7b")
    assert named.for_drafters(("eventgpt",)) == named
    with pytest.raises(ValueError, match="'eventgpt' needs a draft model.*tiny-random"):
        ModelSpec(target=str(tmp_path)).for_drafters(iter(("none", "eventgpt")))


def test_load_models_builds_both_with_their_options(loaded) -> None:
    assert loaded.device == loaded.draft_device == torch.device("cpu")
    assert loaded.dtype == torch.float32
    assert loaded.target.lm_head.weight.dtype == torch.float32
    assert isinstance(loaded.draft, EventGPT)
    assert loaded.target.prefix_cache is not None and loaded.draft.prefix_cache is not None
    # the draft model's random weights are seeded seed + 1
    same = EventGPT.from_preset("tiny-random", dtype=torch.float32, seed=4)
    assert torch.equal(same.lm_head.weight, loaded.draft.lm_head.weight)


def test_load_models_loads_only_what_is_named() -> None:
    target_only = load_models(ModelSpec(target="tiny-random", device="cpu", dtype="float32"))
    assert target_only.draft is None and target_only.target is not None
    draft_only = load_models(ModelSpec(target=None, draft_model="tiny-random", device="cpu",
                                       dtype="bfloat16"))
    assert draft_only.target is None
    assert draft_only.draft.lm_head.weight.dtype == torch.bfloat16


def test_clip_sizes_come_from_the_configs(loaded) -> None:
    sizes = loaded.sizes
    assert sizes == ClipSizes(
        num_frames=loaded.target.num_frames,
        frame_size=loaded.target.config.vision_config.image_size,
        n_event_images=loaded.draft.config.n_event_images,
        event_size=loaded.draft.config.image_size, world=False)
    inputs = load_inputs("random", "random", sizes, seed=5)
    assert inputs.video.shape == (sizes.num_frames, sizes.frame_size, sizes.frame_size, 3)
    assert inputs.event_images.shape == (sizes.n_event_images, sizes.event_size,
                                         sizes.event_size, 3)
    assert ClipSizes.of(loaded.target) == ClipSizes(num_frames=sizes.num_frames,
                                                    frame_size=sizes.frame_size)


def test_the_world_flag_is_declared_in_config_json(tmp_path: Path) -> None:
    from evspec.data.world.tokenizer import build_world_tokenizers
    from evspec.models.eventgpt import build_model
    from evspec.models.presets.eventgpt import world_eventgpt_preset

    tok = build_world_tokenizers()[0]
    config = world_eventgpt_preset("world-micro", tok).config()
    assert config.world
    model = EventGPT(build_model(config, seed=0), tok)
    assert is_world_model(model)
    folder = model.save_pretrained(tmp_path / "world")
    raw = json.loads((folder / "config.json").read_text())
    assert raw["evspec_world"] is True
    assert is_world_model(EventGPT.from_pretrained(folder))
    # the same checkpoint without the key is not a world model, whatever its tower is called
    del raw["evspec_world"]
    (folder / "config.json").write_text(json.dumps(raw))
    plain = EventGPT.from_pretrained(folder)
    assert plain.config.mm_visual_tower.startswith("evspec/world") and not is_world_model(plain)
    assert "evspec_world" not in json.loads(
        (plain.save_pretrained(tmp_path / "plain") / "config.json").read_text())


@pytest.mark.skipif(not (WORLD / "drafter" / "config.json").is_file(),
                    reason="world assets not shipped")
def test_the_shipped_world_drafter_declares_it() -> None:
    raw = json.loads((WORLD / "drafter" / "config.json").read_text())
    assert raw["evspec_world"] is True
    world = load_models(ModelSpec(target="world", draft_model="world", device="cpu",
                                  dtype="float32"))
    assert world.sizes.world and world.sizes.n_event_images == 5
    events = np.asarray(load_inputs(None, "random", world.sizes).event_images)
    assert events.shape[1:] == (world.sizes.event_size, world.sizes.event_size, 3)
