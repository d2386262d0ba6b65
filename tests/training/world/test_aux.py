"""The auxiliary per-patch labels (from scene specs) and heads used in world training."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from evspec.data.video import sample_indices
from evspec.data.world.render import render_rgb
from evspec.data.world.scene import ObjectSpec, SceneSpec
from evspec.data.world.tables import COLOUR_HUES, SHAPES
from evspec.training.world.aux_heads import AuxHeads
from evspec.training.world.aux_labels import (
    IGNORE,
    MOTION_CLASSES,
    SPEED_CLASSES,
    event_labels,
    frame_labels,
)

CIRCLE = ObjectSpec("circle", "red", 7.0, 20.0, 36.0, 0.0, 0.0, "static", None)
SQUARE = ObjectSpec("square", "blue", 6.0, 10.0, 10.0, 24.0, 0.0, "right", "fast")


def _scene(*objects: ObjectSpec, pan: tuple[float, float] = (0.0, 0.0)) -> SceneSpec:
    return SceneSpec(width=64, height=64, duration_s=1.0, background=0.2, texture=(), pan=pan,
                     objects=objects)


def _patch(x: float, y: float, grid: int = 8, size: int = 64) -> int:
    cell = size // grid
    return int(y) // cell * grid + int(x) // cell


def test_frame_labels_name_the_object_its_colour_motion_and_centre() -> None:
    lab = frame_labels(_scene(CIRCLE, SQUARE), n_video_frames=20, fps=20, num_frames=8, grid=8)
    assert lab.shape.shape == (1, 8, 64) and lab.centre.shape == (1, 8, 64, 2)
    c = _patch(20, 36)
    assert (lab.shape[0, :, c] == 1 + SHAPES.index("circle")).all()
    assert (lab.colour[0, :, c] == list(COLOUR_HUES).index("red")).all()
    assert (lab.motion[0, :, c] == MOTION_CLASSES.index("static")).all()
    assert (lab.speed[0, :, c] == SPEED_CLASSES.index("static")).all()
    np.testing.assert_allclose(lab.centre[0, :, c], [[2 * 20 / 64 - 1, 2 * 36 / 64 - 1]] * 8, atol=1e-6)
    times = sample_indices(20, 8) / 20.0
    for k, t in enumerate(times):  # the square's patch follows it to the right
        s = _patch(10 + 24 * t, 10)
        assert lab.shape[0, k, s] == 1 + SHAPES.index("square")
        assert lab.motion[0, k, s] == MOTION_CLASSES.index("right")
        assert lab.speed[0, k, s] == SPEED_CLASSES.index("fast")
        np.testing.assert_allclose(lab.centre[0, k, s], [2 * (10 + 24 * t) / 64 - 1, 2 * 10 / 64 - 1],
                                   atol=1e-6)
    far = _patch(60, 60)
    assert (lab.shape[0, :, far] == 0).all() and (lab.colour[0, :, far] == IGNORE).all()
    assert np.isnan(lab.centre[0, :, far]).all()


def test_labelled_patches_are_where_the_rendered_objects_are() -> None:
    """Objects are brighter than the background: labelled patches of the rendered frames
    are brighter than unlabelled ones, frame by frame."""
    scene = _scene(CIRCLE, SQUARE)
    lab = frame_labels(scene, n_video_frames=20, fps=20, num_frames=8, grid=8)
    frames = render_rgb(scene, sample_indices(20, 8) / 20.0).astype(np.float32).mean(-1)  # [8, 64, 64]
    patches = frames.reshape(8, 8, 8, 8, 8).transpose(0, 1, 3, 2, 4).reshape(8, 64, 64).mean(-1)
    for k in range(8):
        on, off = patches[k][lab.shape[0, k] > 0], patches[k][lab.shape[0, k] == 0]
        assert on.size >= 2 and on.min() > off.max(), (k, on.min(), off.max())


def test_event_labels_only_show_what_moves_on_screen() -> None:
    still = event_labels(_scene(CIRCLE, SQUARE), n_images=5, grid=8)
    assert still.shape.shape == (1, 5, 64)
    c = _patch(20, 36)
    assert (still.shape[0, :, c] == 0).all()  # a static object emits no events
    assert (still.colour == IGNORE).all()  # events carry no colour
    assert (still.shape[0] == 1 + SHAPES.index("square")).sum(axis=1).min() >= 1
    panned = event_labels(_scene(CIRCLE, SQUARE, pan=(3.0, 0.0)), n_images=5, grid=8)
    circle = panned.shape[0] == 1 + SHAPES.index("circle")
    assert circle.any(axis=1).all()  # seen moving through the pan, in every chunk
    assert (panned.motion[0][circle] == MOTION_CLASSES.index("static")).all()


def test_no_object_scene_has_background_labels_only() -> None:
    lab = frame_labels(_scene(), n_video_frames=20, fps=20, num_frames=8, grid=8)
    assert (lab.shape == 0).all() and (lab.motion == IGNORE).all() and np.isnan(lab.centre).all()


@pytest.mark.parametrize("role", ["target", "drafter"])
def test_heads_loss_parts_are_finite_without_labels_and_fall_with_training(role: str) -> None:
    torch.manual_seed(0)
    heads = AuxHeads(role, 16)
    b, k, p = 4, 3, 4
    feats = torch.randn(b, k, p, 16)
    hidden = torch.randn(b, k, p, 16) if role == "target" else None
    empty = {"shape": torch.zeros(b, k, p, dtype=torch.long),
             **{n: torch.full((b, k, p), IGNORE) for n in ("colour", "motion", "speed")},
             "centre": torch.full((b, k, p, 2), float("nan"))}
    total, parts = heads.loss(feats, empty, hidden)
    expected = {"shape", "centre"} | ({"colour", "llm_motion", "llm_speed"} if role == "target"
                                      else {"motion", "speed"})
    assert set(parts) == expected and torch.isfinite(total)
    assert float(parts["centre"].detach()) == 0.0
    labels = {"shape": torch.randint(0, 6, (b, k, p)), "colour": torch.randint(0, 8, (b, k, p)),
              "motion": torch.randint(0, 9, (b, k, p)), "speed": torch.randint(0, 3, (b, k, p)),
              "centre": torch.rand(b, k, p, 2) * 2 - 1}
    opt = torch.optim.Adam(heads.parameters(), lr=0.05)
    first = None
    for _ in range(60):
        loss, _ = heads.loss(feats, labels, hidden)
        first = float(loss.detach()) if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss.detach()) < 0.5 * first
    with pytest.raises(ValueError, match="role"):
        AuxHeads("critic", 16)


@pytest.mark.parametrize("role", ["target", "drafter"])
def test_split_labels_belong_to_their_rows(micro_world: Path, role: str) -> None:
    from evspec.data.world.generate import load_world_extra
    from evspec.training.world.dataset import load_split
    from evspec.training.world.world_models import build_world_model, world_tokenizers

    model = build_world_model(role, "world-micro", world_tokenizers(micro_world), seed=0, device="cpu")
    split = load_split(micro_world, "train", model, role, workers=1, progress=False, aux_labels=True)
    assert split.labels is not None
    n, k = split.pixels.shape[:2]
    assert split.labels.shape.shape == (n, k, 4)
    extra = load_world_extra(micro_world, "train")
    for row, clip in enumerate(split.clip_ids):
        scene = SceneSpec.from_dict(extra[clip]["scene"])
        one = (frame_labels(scene, n_video_frames=20, fps=20, num_frames=k, grid=2) if role == "target"
               else event_labels(scene, n_images=k, grid=2))
        np.testing.assert_array_equal(split.labels.shape[row], one.shape[0])
    assert load_split(micro_world, "train", model, role, workers=1, progress=False).labels is None
