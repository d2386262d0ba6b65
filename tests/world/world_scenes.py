"""Hand-built scenes for the world tests (no sampling), imported by the test modules."""

from __future__ import annotations

import numpy as np

from evspec.data.world.scene import ObjectSpec, SceneSpec, TextureWave


def make_scene(
    objects: list[ObjectSpec],
    *,
    background: float = 0.2,
    pan: tuple[float, float] = (0.0, 0.0),
    size: int = 32,
    textured: bool = False,
) -> SceneSpec:
    texture = ()
    if textured:
        texture = (TextureWave(0.03, 0.05, 0.02, 0.3), TextureWave(0.02, -0.01, 0.04, 1.0))
    return SceneSpec(size, size, 1.0, background, texture, pan, tuple(objects))


def obj(
    shape: str = "square",
    colour: str = "yellow",
    *,
    x0: float = 16.0,
    y0: float = 16.0,
    vx: float = 0.0,
    vy: float = 0.0,
    radius: float = 5.0,
) -> ObjectSpec:
    moving = (vx, vy) != (0.0, 0.0)
    motion = "static"
    if moving:
        motion = {(1, 0): "right", (-1, 0): "left", (0, 1): "down", (0, -1): "up"}.get(
            (int(np.sign(vx)), int(np.sign(vy))), "down-right"
        )
    return ObjectSpec(shape, colour, radius, x0, y0, vx, vy, motion, "slow" if moving else None)
