"""Render a :class:`SceneSpec` at given times: RGB frames for the video, luminance for events.

Objects are drawn with a one-pixel anti-aliased edge from signed distance functions
(coverage ``alpha = clip(0.5 - d, 0, 1)``), so sub-pixel motion changes intensities
gradually, as optics blur a real edge.  Compositing is linear, so the luminance image is
exactly ``LUMA_WEIGHTS . rgb`` before quantisation; it is computed directly from each
colour's luminance level, which makes hue strictly invisible to the event simulator.
"""

from __future__ import annotations

import math

import numpy as np

from evspec.data.world.palette import palette
from evspec.data.world.scene import ObjectSpec, SceneSpec

_SQRT2 = math.sqrt(2.0)
# Triangle (pointing up) edge normals: bottom, upper right, upper left.
_TRI_NORMALS = ((0.0, 1.0), (math.sin(2 * math.pi / 3), -0.5), (-math.sin(2 * math.pi / 3), -0.5))


def _grid(scene: SceneSpec) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates: ``xs`` ``[1, 1, W]``, ``ys`` ``[1, H, 1]`` (float32)."""
    xs = (np.arange(scene.width, dtype=np.float32) + 0.5)[None, None, :]
    ys = (np.arange(scene.height, dtype=np.float32) + 0.5)[None, :, None]
    return xs, ys


def signed_distance(shape: str, dx: np.ndarray, dy: np.ndarray, r: float) -> np.ndarray:
    """Approximate signed distance (px, negative inside) of a shape of size ``r`` centred at 0.

    ``dx`` ``[T, 1, W]`` and ``dy`` ``[T, H, 1]`` broadcast to the result ``[T, H, W]``.
    """
    if shape == "circle":
        return np.sqrt(dx * dx + dy * dy) - r
    if shape == "square":
        return np.maximum(np.abs(dx), np.abs(dy)) - 0.85 * r
    if shape == "diamond":
        return (np.abs(dx) + np.abs(dy)) / _SQRT2 - 1.15 * r / _SQRT2
    if shape == "triangle":
        rc = 1.2 * r  # circumradius; the centroid is at the origin
        d = None
        for nx, ny in _TRI_NORMALS:
            di = nx * dx + ny * dy
            d = di if d is None else np.maximum(d, di)
        return d - rc / 2.0
    if shape == "cross":
        ax, ay = np.abs(dx), np.abs(dy)
        arm = 0.35 * r
        return np.minimum(np.maximum(ax - r, ay - arm), np.maximum(ax - arm, ay - r))
    raise ValueError(f"unknown shape {shape!r}; add its signed distance to render.py")


def _path_box(obj: ObjectSpec, scene: SceneSpec, t: np.ndarray) -> tuple[slice, slice]:
    """Rows and columns that ``obj`` can touch at the times ``t`` (its bounding box)."""
    reach = 1.25 * obj.radius + 1.5  # every shape lies within 1.2 r of its centre
    cx = obj.x0 + (obj.vx - scene.pan[0]) * t
    cy = obj.y0 + (obj.vy - scene.pan[1]) * t
    x0 = int(np.clip(np.floor(cx.min() - reach), 0, scene.width))
    x1 = int(np.clip(np.ceil(cx.max() + reach), 0, scene.width))
    y0 = int(np.clip(np.floor(cy.min() - reach), 0, scene.height))
    y1 = int(np.clip(np.ceil(cy.max() + reach), 0, scene.height))
    return slice(y0, y1), slice(x0, x1)


def coverage(
    obj: ObjectSpec, scene: SceneSpec, times_s: np.ndarray
) -> tuple[np.ndarray, tuple[slice, slice]]:
    """Fraction of each pixel covered by ``obj`` at each time, inside the object's path box.

    Returns ``alpha`` ``[T, h, w]`` float32 and the box ``(rows, cols)`` it covers in the
    image (zero coverage outside it).
    """
    t = np.asarray(times_s, dtype=np.float64)
    rows, cols = _path_box(obj, scene, t)
    cx = (obj.x0 + (obj.vx - scene.pan[0]) * t).astype(np.float32)[:, None, None]  # [T, 1, 1]
    cy = (obj.y0 + (obj.vy - scene.pan[1]) * t).astype(np.float32)[:, None, None]
    xs, ys = _grid(scene)
    dx = xs[:, :, cols] - cx  # [T, 1, w]
    dy = ys[:, rows, :] - cy  # [T, h, 1]
    d = signed_distance(obj.shape, dx, dy, obj.radius)  # [T, h, w]
    return np.clip(0.5 - d, 0.0, 1.0).astype(np.float32, copy=False), (rows, cols)


def background(scene: SceneSpec, times_s: np.ndarray) -> np.ndarray:
    """Background grey level with texture, ``[T, H, W]`` float32 (``[1, H, W]`` when the
    camera does not pan, to be broadcast)."""
    t = np.asarray(times_s, dtype=np.float64)
    if scene.pan == (0.0, 0.0):
        t = t[:1] * 0.0
    xs, ys = _grid(scene)
    # World coordinates of each pixel: screen + camera offset.
    wx = xs.astype(np.float64) + (scene.pan[0] * t)[:, None, None]  # [T, 1, W]
    wy = ys.astype(np.float64) + (scene.pan[1] * t)[:, None, None]  # [T, H, 1]
    img = np.full((len(t), scene.height, scene.width), scene.background, dtype=np.float32)
    for w in scene.texture:
        # sin(a + b) = sin a cos b + cos a sin b keeps the transcendental work separable.
        a = 2 * math.pi * w.fx * wx  # [T, 1, W]
        b = 2 * math.pi * w.fy * wy + w.phase  # [T, H, 1]
        sa = (w.amplitude * np.sin(a)).astype(np.float32)
        ca = (w.amplitude * np.cos(a)).astype(np.float32)
        sb, cb = np.sin(b).astype(np.float32), np.cos(b).astype(np.float32)
        img += sa * cb
        img += ca * sb
    return img


def render_luminance(scene: SceneSpec, times_s: np.ndarray) -> np.ndarray:
    """Luminance in ``(0, 1)`` at each time: ``[T, H, W]`` float32."""
    t = np.asarray(times_s, dtype=np.float64)
    lum = np.broadcast_to(background(scene, t), (len(t), scene.height, scene.width)).copy()
    colours = palette()
    for obj in scene.objects:
        a, (rows, cols) = coverage(obj, scene, t)  # [T, h, w]
        box = lum[:, rows, cols]
        box += a * (np.float32(colours[obj.colour].luminance) - box)
        lum[:, rows, cols] = box
    return lum


def render_rgb(scene: SceneSpec, times_s: np.ndarray) -> np.ndarray:
    """RGB frames at each time: ``[T, H, W, 3]`` uint8."""
    t = np.asarray(times_s, dtype=np.float64)
    bg = np.broadcast_to(background(scene, t), (len(t), scene.height, scene.width))
    rgb = np.repeat(bg[..., None], 3, axis=-1)  # [T, H, W, 3]
    colours = palette()
    for obj in scene.objects:
        a, (rows, cols) = coverage(obj, scene, t)
        col = np.asarray(colours[obj.colour].rgb, dtype=np.float32)  # [3]
        box = rgb[:, rows, cols]  # [T, h, w, 3]
        box += a[..., None] * (col - box)
        rgb[:, rows, cols] = box
    return np.clip(np.rint(rgb * 255.0), 0, 255).astype(np.uint8)
