"""Per-patch training labels from the world's scene specs (training-only supervision).

A from-scratch 64-pixel CLIP tower trained only through the answer tokens learns which
colours are present and little else: shape, position and motion stay unread
(docs/world_training.md).  The world knows the truth behind every pixel, so each training
image gets dense labels that the auxiliary heads (:mod:`evspec.training.world.aux_heads`)
predict from the model's own features, the way a pretrained vision encoder arrives
already knowing what it sees.  Nothing here changes the shipped architecture: the heads
are dropped after training.

Labels per clip, per image, per patch (``[K, P]`` with ``P = g * g`` patches in row-major
order, the CLIP tower's order after its CLS token):

* ``shape``: 0 = no object, ``1 + SHAPES.index(shape)`` where an object covers at least
  :data:`MIN_COVER` of the patch (the most-covering object wins);
* ``colour``: ``COLOUR_HUES`` index of that object, :data:`IGNORE` elsewhere (target only:
  events carry no colour);
* ``motion``: 0 = static in the world, ``1 + DIRECTIONS`` index otherwise (:data:`IGNORE`
  where there is no object);
* ``speed``: 0 static, 1 slow, 2 fast (:data:`IGNORE` where there is no object);
* ``centre``: the covering object's centre in the image at that time, scaled to
  ``[-1, 1]`` (NaN where there is no object).

Target images are video frames at the sampled frame times.  Drafter images are the
EventGPT renderings of n equal-count chunks of the stream; for a constant-velocity scene
the event rate is roughly constant, so chunk ``k`` is labelled over the time span
``[k, k + 1] * duration / n`` (the object's swept coverage), and only objects that move
*on screen* (so emit events; a world-static object seen through a camera pan does) count.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from evspec.data.video import sample_indices
from evspec.data.world.render import coverage
from evspec.data.world.scene import SceneSpec
from evspec.data.world.tables import COLOUR_HUES, DIRECTIONS, SHAPES

IGNORE = -100
MIN_COVER = 0.2  # fraction of a patch an object must cover to label it
MOTION_CLASSES: tuple[str, ...] = ("static", *DIRECTIONS)
SPEED_CLASSES: tuple[str, ...] = ("static", "slow", "fast")
N_SHAPE = 1 + len(SHAPES)  # background + shapes
N_COLOUR = len(COLOUR_HUES)
_SWEEP = 5  # sub-times per drafter chunk


@dataclass
class PatchLabels:
    """Labels of N clips: ``shape``/``colour``/``motion``/``speed`` ``[N, K, P]`` int64,
    ``centre`` ``[N, K, P, 2]`` float32."""

    shape: np.ndarray
    colour: np.ndarray
    motion: np.ndarray
    speed: np.ndarray
    centre: np.ndarray

    def __post_init__(self) -> None:
        base = self.shape.shape
        for name in ("colour", "motion", "speed"):
            if getattr(self, name).shape != base:
                raise ValueError(f"PatchLabels.{name} has shape {getattr(self, name).shape}, expected {base}")
        if self.centre.shape != (*base, 2):
            raise ValueError(f"PatchLabels.centre has shape {self.centre.shape}, expected {(*base, 2)}")

    @classmethod
    def stack(cls, rows: list[PatchLabels]) -> PatchLabels:
        return cls(*(np.concatenate([getattr(r, f) for r in rows]) for f in
                     ("shape", "colour", "motion", "speed", "centre")))


def _patch_cover(scene: SceneSpec, obj_index: int, times: np.ndarray, grid: int) -> np.ndarray:
    """Fraction of each patch covered by object ``obj_index`` at each time ``[T, g, g]``."""
    obj = scene.objects[obj_index]
    alpha, (rows, cols) = coverage(obj, scene, times)  # [T, h, w] inside the path box
    full = np.zeros((len(times), scene.height, scene.width), dtype=np.float32)
    full[:, rows, cols] = alpha
    if scene.height % grid or scene.width % grid:
        raise ValueError(f"a {scene.width}x{scene.height} scene does not split into a {grid}x{grid} patch grid")
    ph, pw = scene.height // grid, scene.width // grid
    return full.reshape(len(times), grid, ph, grid, pw).mean(axis=(2, 4))  # [T, g, g]


def _labels(scene: SceneSpec, spans: np.ndarray, grid: int, *, events: bool) -> PatchLabels:
    """``spans`` ``[K, S]``: the times (s) each image shows (one for a frame, a sweep for
    an event chunk)."""
    k, s = spans.shape
    p = grid * grid
    covers = []
    for i, obj in enumerate(scene.objects):
        screen_v = (obj.vx - scene.pan[0], obj.vy - scene.pan[1])
        if events and screen_v == (0.0, 0.0):
            covers.append(np.zeros((k, p), dtype=np.float32))  # no events, not in the image
            continue
        c = _patch_cover(scene, i, spans.reshape(-1), grid).reshape(k, s, p)
        covers.append(c.max(axis=1))  # swept coverage [K, P]
    shape = np.zeros((k, p), dtype=np.int64)
    colour = np.full((k, p), IGNORE, dtype=np.int64)
    motion = np.full((k, p), IGNORE, dtype=np.int64)
    speed = np.full((k, p), IGNORE, dtype=np.int64)
    centre = np.full((k, p, 2), np.nan, dtype=np.float32)
    if not covers:
        return PatchLabels(shape[None], colour[None], motion[None], speed[None], centre[None])
    cover = np.stack(covers)  # [O, K, P]
    best = cover.argmax(axis=0)  # [K, P]
    hit = cover.max(axis=0) >= MIN_COVER  # [K, P]
    mid = spans.mean(axis=1)  # [K] time each image is centred on
    for i, obj in enumerate(scene.objects):
        sel = hit & (best == i)  # [K, P]
        if not sel.any():
            continue
        shape[sel] = 1 + SHAPES.index(obj.shape)
        if not events:
            colour[sel] = list(COLOUR_HUES).index(obj.colour)
        motion[sel] = MOTION_CLASSES.index(obj.motion)
        speed[sel] = SPEED_CLASSES.index(obj.speed if obj.speed else "static")
        cx = obj.x0 + (obj.vx - scene.pan[0]) * mid  # [K]
        cy = obj.y0 + (obj.vy - scene.pan[1]) * mid
        xy = np.stack([2 * cx / scene.width - 1, 2 * cy / scene.height - 1], axis=-1)  # [K, 2]
        centre[sel] = np.broadcast_to(xy[:, None, :], (k, p, 2))[sel]
    return PatchLabels(shape[None], colour[None], motion[None], speed[None], centre[None])


def frame_labels(scene: SceneSpec, *, n_video_frames: int, fps: float, num_frames: int,
                 grid: int) -> PatchLabels:
    """Labels ``[1, num_frames, g * g]`` of the frames the target samples from the clip's
    ``n_video_frames`` video frames (``evspec.data.video.sample_indices``)."""
    times = sample_indices(n_video_frames, num_frames).astype(np.float64) / fps  # [K]
    return _labels(scene, times[:, None], grid, events=False)


def event_labels(scene: SceneSpec, *, n_images: int, grid: int) -> PatchLabels:
    """Labels ``[1, n_images, g * g]`` of the drafter's event images (chunk k spans
    ``[k, k + 1] * duration / n``)."""
    edges = np.linspace(0.0, scene.duration_s, n_images + 1)
    frac = (np.arange(_SWEEP) + 0.5) / _SWEEP
    spans = edges[:-1, None] + (edges[1:] - edges[:-1])[:, None] * frac[None, :]  # [K, S]
    return _labels(scene, spans, grid, events=True)
