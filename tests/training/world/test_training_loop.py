"""World-model training on a micro world: forward parity with the inference wrappers,
falling loss, exact resume, fp16 export, config and batching rules."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open

from evspec.decoding.engine import generate
from evspec.models.request import Request
from evspec.training.world.batching import IGNORE, PixelNormalizer, batch_indices, collate
from evspec.training.world.config import WorldTrainConfig
from evspec.training.world.dataset import fit_images, load_split
from evspec.training.world.forward import WorldForward
from evspec.training.world.loop import Plan, train_world_model
from evspec.training.world.world_models import (
    build_world_model,
    export_fp16,
    load_world_model,
    world_tokenizers,
)

from training_helpers import micro_config


def _request(role: str, question: str, images: np.ndarray) -> Request:
    if role == "target":
        return Request(question, video=images)
    return Request(question, event_images=images)


@pytest.mark.parametrize(("role", "use_mask"), [("target", False), ("drafter", False), ("target", True)])
def test_batched_forward_matches_the_inference_wrapper(micro_world: Path, role: str, use_mask: bool) -> None:
    """Teacher-forced logits of the batched training forward equal prefill + score of the
    wrapper, and the batched greedy decoder gives the engine's greedy tokens."""
    model = build_world_model(role, "world-micro", world_tokenizers(micro_world), seed=3)
    split = load_split(micro_world, "val", model, role, workers=1, progress=False)
    fwd = WorldForward(model, use_mask=use_mask)
    pixels = torch.from_numpy(split.pixels)
    exs = split.examples[:3]  # different prompt and answer lengths: padding is exercised
    assert len({len(e.prompt) + len(e.answer) for e in exs}) > 1
    batch = collate(exs, pad_id=fwd.pad_id, expand=fwd.expand)
    with torch.no_grad():
        hidden = fwd.hidden(fwd.embed(batch, pixels))  # [B, L', H]
    for i, ex in enumerate(exs):
        req = _request(role, ex.question, split.pixels[ex.clip])
        state = model.prefill(req)
        scored = model.score(state, torch.tensor(ex.answer[:-1]))
        ref = torch.cat([state.last_logits[None], scored.logits])  # [m, V]
        start = int(batch.prompt_lengths[i]) - 1
        with torch.no_grad():
            ours = model.lm_head(hidden[i, start : start + len(ex.answer)]).float()
        torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)
        labels = batch.labels[i]
        assert labels[start : start + len(ex.answer)].tolist() == list(ex.answer)
        assert bool((labels[:start] == IGNORE).all())
    prompts = collate(exs, pad_id=fwd.pad_id, expand=fwd.expand, with_answer=False)
    greedy = fwd.greedy(prompts, pixels, max_new_tokens=6)
    for ex, toks in zip(exs, greedy):
        res = generate(model, _request(role, ex.question, split.pixels[ex.clip]), None, max_new_tokens=6)
        assert toks == res.tokens


@pytest.mark.parametrize("role", ["target", "drafter"])
def test_pixel_normaliser_equals_the_image_processor(role: str) -> None:
    model = build_world_model(role, "world-micro", world_tokenizers(None), seed=0)
    size = 16
    images = np.random.default_rng(0).integers(0, 256, (3, size, size, 3), dtype=np.uint8)
    ref = model.preprocess_video(images[:1].repeat(8, 0)) if role == "target" else model.preprocess(images)
    fwd = WorldForward(model)
    src = images[:1].repeat(8, 0) if role == "target" else images
    ours = fwd.normalize(torch.from_numpy(src)[None])[0]
    torch.testing.assert_close(ours, ref, atol=1e-6, rtol=1e-6)


def test_fit_images_is_identity_at_size_and_crops_otherwise() -> None:
    imgs = np.random.default_rng(1).integers(0, 256, (2, 16, 16, 3), dtype=np.uint8)
    assert fit_images(imgs, 16) is imgs
    wide = np.random.default_rng(2).integers(0, 256, (2, 20, 40, 3), dtype=np.uint8)
    assert fit_images(wide, 16).shape == (2, 16, 16, 3)


def test_training_lowers_the_loss(micro_world: Path, tmp_path: Path) -> None:
    cfg = micro_config(micro_world, tmp_path / "run", "drafter", steps=24, eval_interval=12,
                       log_interval=4)
    result = train_world_model(cfg, progress=False)
    losses = [e["loss"] for e in result.log["train"]]
    assert result.steps_done == 24 and len(losses) == 6
    assert losses[-1] < 0.6 * losses[0], losses
    assert len(result.log["val"]) == 2 and result.log["val"][1]["loss"] < result.log["val"][0]["loss"]
    saved = json.loads((tmp_path / "run" / "train_log.json").read_text())
    assert saved["train"] == result.log["train"] and saved["config"]["steps"] == 24
    assert (tmp_path / "run" / "model" / "model.safetensors").is_file()


def test_resume_continues_exactly(micro_world: Path, tmp_path: Path) -> None:
    """An interrupted run resumed from its checkpoint gives the uninterrupted run's losses
    and weights."""
    whole = train_world_model(micro_config(micro_world, tmp_path / "a", "target", steps=6),
                              progress=False)
    cut = micro_config(micro_world, tmp_path / "b", "target", steps=6, stop_at=3)
    first = train_world_model(cut, progress=False)
    assert first.steps_done == 3
    with pytest.raises(FileExistsError, match="--resume"):
        train_world_model(cut, progress=False)
    with pytest.raises(ValueError, match="lr"):
        train_world_model(micro_config(micro_world, tmp_path / "b", "target", steps=6, lr=1e-2),
                          resume=True, progress=False)
    rest = train_world_model(micro_config(micro_world, tmp_path / "b", "target", steps=6),
                             resume=True, progress=False)
    assert rest.steps_done == 6
    a = [e["loss"] for e in whole.log["train"]]
    b = [e["loss"] for e in rest.log["train"]]
    assert [e["step"] for e in rest.log["train"]] == list(range(1, 7))
    np.testing.assert_allclose(b, a, rtol=1e-6)
    ma = load_world_model(tmp_path / "a" / "model").model.state_dict()
    mb = load_world_model(tmp_path / "b" / "model").model.state_dict()
    for name, tensor in ma.items():
        torch.testing.assert_close(mb[name], tensor, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("role", ["target", "drafter"])
def test_fp16_export_loads_back(micro_runs: dict[str, Path], micro_world: Path, tmp_path: Path,
                                role: str) -> None:
    src = micro_runs[role] / "model"
    dst = export_fp16(src, tmp_path / role)
    with safe_open(str(dst / "model.safetensors"), "pt") as f:
        dtypes = {f.get_slice(k).get_dtype() for k in f.keys()}
    assert dtypes == {"F16"}
    fp32, fp16 = load_world_model(src), load_world_model(dst, role=role)
    assert fp16.dtype == torch.float32  # loaded for CPU decoding in float32
    split = load_split(micro_world, "test", fp32, role, workers=1, progress=False)
    ex = split.examples[0]
    req = _request(role, ex.question, split.pixels[ex.clip])
    torch.testing.assert_close(fp16.prefill(req).last_logits, fp32.prefill(req).last_logits,
                               atol=2e-2, rtol=2e-2)
    with pytest.raises(ValueError, match="holds a"):
        load_world_model(dst, role="drafter" if role == "target" else "target")


def test_config_rejects_bad_values_with_fixes(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="role = 'teacher'"):
        WorldTrainConfig(role="teacher", data=tmp_path, out=tmp_path)
    with pytest.raises(ValueError, match="stop_at = 9"):
        WorldTrainConfig(role="target", data=tmp_path, out=tmp_path, steps=5, stop_at=9)
    cfg = WorldTrainConfig(role="drafter", data=tmp_path, out=tmp_path / "o", steps=7)
    assert WorldTrainConfig.from_dict(cfg.to_dict()) == cfg


def test_batches_are_a_function_of_seed_and_step() -> None:
    a = [batch_indices(50, 8, seed=3, step=s).tolist() for s in range(12)]
    assert a == [batch_indices(50, 8, seed=3, step=s).tolist() for s in range(12)]
    epoch = sorted(i for b in a[:6] for i in b)
    assert len(set(epoch)) == 48  # one epoch: no example twice
    assert a != [batch_indices(50, 8, seed=4, step=s).tolist() for s in range(12)]


def test_time_budget_planner_only_ever_shortens_the_plan() -> None:
    from evspec.training.world.loop import BudgetPlanner

    plan = Plan(10_000)
    planner = BudgetPlanner(deadline=100.0, start=0, eval_interval=50, margin=1.0, per_eval=0.0)
    assert planner.needs_clock(20) and planner.needs_clock(80) and not planner.needs_clock(50)
    planner.after_step(plan, 20, now=10.0)
    planner.after_step(plan, 80, now=16.0)  # 0.1 s per step, 84 s left
    assert planner.per_step == pytest.approx(0.1) and plan.steps == 920
    planner.after_eval(plan, 500, now=70.0)  # slower than planned: 0.125 s per step
    assert plan.steps == 740
    planner.after_eval(plan, 600, now=71.0)  # faster now: the plan is not raised again
    assert plan.steps == 740
