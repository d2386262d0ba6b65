"""Event-simulator physics: silence when nothing changes, edges, thresholds, timestamps."""

from __future__ import annotations

import math

import numpy as np
import pytest
from world_scenes import make_scene, obj

from evspec.data.world.clip import internal_times, render_clip
from evspec.data.world.config import WorldConfig
from evspec.data.world.render import render_luminance
from evspec.data.world.scene import SceneConfig
from evspec.data.world.simulate import (
    EventConfig,
    RawEvents,
    add_noise,
    sample_thresholds,
    simulate_events,
)

NO_NOISE = EventConfig(threshold_jitter=0.0, noise_hz=0.0)
CFG = WorldConfig(scene=SceneConfig(resolution=32), events=NO_NOISE)


def _events(scene, cfg: WorldConfig = CFG, seed: int = 0) -> RawEvents:
    return render_clip(scene, cfg, np.random.default_rng(seed))[1]


def _exact(h: int, w: int, c: float = 0.2) -> tuple[np.ndarray, np.ndarray]:
    return np.full((h, w), c), np.full((h, w), c)


def test_static_scene_gives_no_events() -> None:
    scene = make_scene([obj("circle", "red", x0=10), obj("cross", "cyan", x0=22)], textured=True)
    cfg = WorldConfig(scene=SceneConfig(resolution=32), events=EventConfig(noise_hz=0))
    ev = _events(scene, cfg)
    assert len(ev) == 0


def test_camera_pan_makes_static_objects_visible() -> None:
    still = make_scene([obj("square", "yellow")], textured=True)
    panned = make_scene([obj("square", "yellow")], textured=True, pan=(6.0, 0.0))
    assert len(_events(still)) == 0
    ev = _events(panned)
    assert len(ev) > 100
    # The object's edges fire, not just the faint texture: events concentrate near it.
    near = (np.abs(ev.x.astype(int) - 16) <= 8) & (np.abs(ev.y.astype(int) - 16) <= 8)
    assert near.mean() > 0.5


def test_moving_bright_object_on_dark_gives_on_at_leading_and_off_at_trailing_edge() -> None:
    # A bright square (luminance 0.75) moving right over a dark background (0.2).
    scene = make_scene([obj("square", "yellow", x0=10.0, vx=12.0)], background=0.2)
    ev = _events(scene)
    assert len(ev) > 50
    on, off = ev.p == 1, ev.p == 0
    assert on.any() and off.any()
    half = 0.85 * 5.0  # half side of the square
    centre = 10.0 + 12.0 * ev.t / 1e6  # object centre (px) at each event time
    rel = ev.x.astype(float) + 0.5 - centre  # event column relative to the centre
    # ON events sit at the leading (right) edge, OFF at the trailing (left) edge.
    assert np.all(np.abs(rel[on] - half) < 1.6)
    assert np.all(np.abs(rel[off] + half) < 1.6)
    # Rows stay within the square's vertical extent.
    assert np.all(np.abs(ev.y.astype(float) + 0.5 - 16.0) < half + 1.0)


def test_global_ramp_counts_and_interpolated_timestamps() -> None:
    # log I rises linearly by 1.1 over 1 s on every pixel (7 internal steps): an event
    # every C / slope seconds, at times that fall between the internal frames.
    c, slope, n_frames = 0.2, 1.1, 8
    times_us = np.rint(np.linspace(0, 1_000_000, n_frames)).astype(np.int64)
    log_i = np.log(0.1) + slope * times_us / 1e6  # [T]
    lum = np.broadcast_to(np.exp(log_i)[:, None, None], (n_frames, 3, 4)).copy()
    cfg = EventConfig(log_eps=1e-12, noise_hz=0.0)
    ev = simulate_events(lum, times_us, _exact(3, 4, c), cfg)
    pixel = ev.y.astype(int) * 4 + ev.x
    # count = floor(|delta log I| / C) = floor(5.5) on every pixel, all ON.
    assert np.bincount(pixel, minlength=12).tolist() == [math.floor(slope / c)] * 12
    assert np.all(ev.p == 1)
    # The j-th event of a pixel is where the linear path crosses log I0 + j C ...
    for pix in range(12):
        t = ev.t[pixel == pix]
        np.testing.assert_allclose(t, np.arange(1, 6) * c / slope * 1e6, atol=2.0)
    # ... which lies strictly inside an internal frame interval, not on a frame time.
    k = np.searchsorted(times_us, ev.t)  # interval (times_us[k-1], times_us[k]]
    assert np.all((ev.t > times_us[k - 1]) & (ev.t < times_us[k]))


def test_large_change_in_one_step_emits_several_events_with_distinct_times() -> None:
    # One step, log I drops by 0.95 on a 2x2 sensor: floor(0.95 / 0.2) = 4 OFF events each.
    lum = np.stack([np.full((2, 2), 0.8), np.full((2, 2), 0.8 * math.exp(-0.95))])
    ev = simulate_events(lum, np.array([0, 10_000]), _exact(2, 2), EventConfig(log_eps=1e-12))
    assert len(ev) == 16
    assert np.all(ev.p == 0)
    t0 = ev.t[(ev.x == 0) & (ev.y == 0)]
    np.testing.assert_allclose(t0, np.arange(1, 5) * 0.2 / 0.95 * 10_000, atol=1.0)
    assert np.all(np.diff(ev.t) >= 0)


def test_per_pixel_thresholds_are_respected() -> None:
    # Same change (log 2 = 0.69) on two pixels with thresholds 0.2 and 0.3 -> 3 and 2 events.
    lum = np.stack([np.full((1, 2), 0.25), np.full((1, 2), 0.5)])
    th = (np.array([[0.2, 0.3]]), np.array([[0.2, 0.3]]))
    ev = simulate_events(lum, np.array([0, 5000]), th, EventConfig(log_eps=1e-12))
    assert np.bincount(ev.x, minlength=2).tolist() == [3, 2]


def test_hysteresis_back_and_forth() -> None:
    # Up by 0.5 (2 ON, ref at +0.4), down to -0.1 (2 OFF, ref at 0.0), up to +0.1 (none).
    base = 0.3
    lum = np.array([base, base * math.exp(0.5), base * math.exp(-0.1), base * math.exp(0.1)])
    times = np.array([0, 5000, 10_000, 15_000])
    ev = simulate_events(lum.reshape(4, 1, 1), times, _exact(1, 1), EventConfig(log_eps=1e-12))
    assert ev.p.tolist() == [1, 1, 0, 0]
    assert np.all((ev.t[:2] > 0) & (ev.t[:2] <= 5000))
    assert np.all((ev.t[2:] > 5000) & (ev.t[2:] <= 10_000))


def test_threshold_jitter_and_noise() -> None:
    cfg = EventConfig(threshold_jitter=0.05, noise_hz=2.0)
    on, off = sample_thresholds(np.random.default_rng(0), cfg, 64, 64)
    assert abs(on.mean() - 0.2) < 0.005 and 0.005 < on.std() < 0.02
    assert not np.array_equal(on, off)
    empty = simulate_events(np.ones((3, 64, 64)) * 0.3, np.array([0, 1, 2]), (on, off), cfg)
    noisy = add_noise(empty, np.random.default_rng(1), 2.0, 1_000_000, 64, 64)
    assert abs(len(noisy) - 2.0 * 64 * 64) < 5 * math.sqrt(2.0 * 64 * 64)
    assert np.all(np.diff(noisy.t) >= 0) and noisy.t.max() < 1_000_000
    assert noisy.x.max() < 64 and noisy.y.max() < 64 and set(np.unique(noisy.p)) == {0, 1}


def test_bad_inputs_are_explained() -> None:
    with pytest.raises(ValueError, match="contrast_threshold"):
        EventConfig(contrast_threshold=0.0)
    with pytest.raises(ValueError, match="noise_hz"):
        EventConfig(noise_hz=-1.0)
    with pytest.raises(ValueError, match="strictly increasing"):
        simulate_events(np.ones((2, 2, 2)), np.array([5, 5]), _exact(2, 2))
    with pytest.raises(ValueError, match=r"\[T, H, W\]"):
        simulate_events(np.ones((2, 2)), np.array([0, 1]), _exact(2, 2))


def test_luminance_stays_positive_and_in_range() -> None:
    scene = make_scene([obj("triangle", "pink", vx=10.0)], textured=True, pan=(3.0, 1.0))
    times_s, _ = internal_times(CFG)
    lum = render_luminance(scene, times_s)
    assert lum.shape == (CFG.n_steps + 1, 32, 32)
    assert lum.min() > 0.05 and lum.max() <= 0.75 + 1e-6
