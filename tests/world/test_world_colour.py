"""Colour is invisible to the simulated event camera (only luminance levels are)."""

from __future__ import annotations

import numpy as np
from world_scenes import make_scene, obj

from evspec.data.world.clip import render_clip
from evspec.data.world.config import WorldConfig
from evspec.data.world.palette import LUMA_WEIGHTS, colour_at_luminance, luminance, palette
from evspec.data.world.scene import SceneConfig
from evspec.data.world.tables import COLOUR_HUES, LUMINANCE_LEVELS

CFG = WorldConfig(scene=SceneConfig(resolution=32))


def _render(scene, seed: int = 3):
    return render_clip(scene, CFG, np.random.default_rng(seed))


def test_palette_luminance_is_exact_and_hues_differ() -> None:
    pal = palette()
    assert set(pal) == set(COLOUR_HUES)
    for c in pal.values():
        rgb = np.asarray(c.rgb)
        assert np.all((rgb >= 0) & (rgb <= 1))
        assert abs(float(luminance(rgb)) - LUMINANCE_LEVELS[c.level]) < 1e-9
    same_level = [c for c in pal.values() if c.level == 0]
    assert len(same_level) >= 3
    rgbs = np.array([c.rgb for c in same_level])
    # Distinct hues: every pair differs clearly in RGB.
    d = np.abs(rgbs[:, None] - rgbs[None]).max(-1) + np.eye(len(rgbs))
    assert d.min() > 0.2
    assert abs(LUMA_WEIGHTS.sum() - 1.0) < 1e-12
    # Hue kept: the most saturated achievable colour points the same way as the nominal one.
    red = colour_at_luminance((1.0, 0.0, 0.0), 0.5)
    assert red[0] > red[1] == red[2]


def test_equal_luminance_hues_give_identical_events_but_different_frames() -> None:
    base = [obj("circle", "red", x0=10.0, vx=14.0), obj("square", "cyan", x0=22.0, vy=-9.0)]
    recoloured = [
        obj("circle", "blue", x0=10.0, vx=14.0),
        obj("square", "yellow", x0=22.0, vy=-9.0),
    ]
    assert palette()["red"].level == palette()["blue"].level
    assert palette()["cyan"].level == palette()["yellow"].level
    frames_a, ev_a = _render(make_scene(base, textured=True, pan=(2.0, 0.0)))
    frames_b, ev_b = _render(make_scene(recoloured, textured=True, pan=(2.0, 0.0)))
    assert len(ev_a) > 100
    for f in ("x", "y", "t", "p"):
        np.testing.assert_array_equal(getattr(ev_a, f), getattr(ev_b, f))
    assert not np.array_equal(frames_a, frames_b)  # the video does show the colours


def test_different_luminance_levels_give_different_events() -> None:
    assert palette()["red"].level != palette()["yellow"].level
    _, ev_dim = _render(make_scene([obj("circle", "red", vx=14.0)]))
    _, ev_bright = _render(make_scene([obj("circle", "yellow", vx=14.0)]))
    assert len(ev_bright) > len(ev_dim)  # larger log contrast -> more events


def test_video_frames_render_the_named_colour() -> None:
    frames, _ = _render(make_scene([obj("square", "green", radius=6.0)], background=0.2))
    assert frames.shape == (CFG.n_video_frames, 32, 32, 3) and frames.dtype == np.uint8
    centre = frames[0, 16, 16].astype(int)
    expected = np.rint(np.asarray(palette()["green"].rgb) * 255).astype(int)
    assert np.abs(centre - expected).max() <= 1
    corner = frames[0, 0, 0].astype(int)
    assert corner[0] == corner[1] == corner[2]  # the background is grey
