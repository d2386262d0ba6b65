"""One world clip in memory: scene -> RGB frames, simulated events, questions (no file IO).

Each clip draws from its own random streams derived from ``(seed, index)`` only, so a clip
is identical whatever the number of clips, workers or their order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from evspec.data.world.config import WorldConfig
from evspec.data.world.questions import WorldQA, scene_questions
from evspec.data.world.render import render_luminance, render_rgb
from evspec.data.world.scene import SceneSpec, sample_scene
from evspec.data.world.simulate import RawEvents, add_noise, sample_thresholds, simulate_events


@dataclass(frozen=True)
class WorldClip:
    """``frames``: ``[F, H, W, 3]`` uint8 at ``fps``; ``events`` over ``[0, duration_us]``."""

    clip_id: str
    index: int
    scene: SceneSpec
    frames: np.ndarray
    fps: int
    events: RawEvents
    duration_us: int
    questions: list[WorldQA]


def clip_id(index: int) -> str:
    return f"world-{index:06d}"


def clip_rngs(seed: int, index: int) -> tuple[np.random.Generator, ...]:
    """Independent generators for (scene, sensor: thresholds + noise, questions) of clip
    ``index``."""
    if seed < 0 or index < 0:
        raise ValueError(f"seed ({seed}) and clip index ({index}) must be >= 0")
    children = np.random.SeedSequence([seed, index]).spawn(3)
    return tuple(np.random.default_rng(s) for s in children)


def internal_times(cfg: WorldConfig) -> tuple[np.ndarray, np.ndarray]:
    """Internal frame times: seconds ``[n_steps + 1]`` float64 and µs ``[n_steps + 1]`` int64."""
    k = np.arange(cfg.n_steps + 1)
    times_us = np.rint(k * (1_000_000 / cfg.render_hz)).astype(np.int64)
    return k / cfg.render_hz, times_us


def render_clip(
    scene: SceneSpec, cfg: WorldConfig, sensor_rng: np.random.Generator
) -> tuple[np.ndarray, RawEvents]:
    """Video frames ``[F, H, W, 3]`` uint8 and the event stream of ``scene`` (sensor noise
    included; thresholds and noise are drawn from ``sensor_rng``)."""
    times_s, times_us = internal_times(cfg)
    lum = render_luminance(scene, times_s)  # [T, H, W]
    h, w = scene.height, scene.width
    thresholds = sample_thresholds(sensor_rng, cfg.events, h, w)
    events = simulate_events(lum, times_us, thresholds, cfg.events)
    events = add_noise(events, sensor_rng, cfg.events.noise_hz, cfg.duration_us, h, w)
    video_times = np.arange(cfg.n_video_frames) / cfg.video_fps  # [F]
    return render_rgb(scene, video_times), events


def make_clip(seed: int, index: int, cfg: WorldConfig) -> WorldClip:
    """Generate clip ``index`` of the world with seed ``seed``."""
    scene_rng, sensor_rng, question_rng = clip_rngs(seed, index)
    scene = sample_scene(scene_rng, cfg.scene)
    frames, events = render_clip(scene, cfg, sensor_rng)
    return WorldClip(
        clip_id=clip_id(index),
        index=index,
        scene=scene,
        frames=frames,
        fps=cfg.video_fps,
        events=events,
        duration_us=cfg.duration_us,
        questions=scene_questions(scene, question_rng, cfg.qtypes),
    )
