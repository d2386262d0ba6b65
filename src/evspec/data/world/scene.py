"""Scene specification and sampling: background, optional camera pan, 1-3 moving objects.

Coordinates are image pixels (x = column to the right, y = row downward), time in seconds
from the clip start.  An object's *world* velocity ``(vx, vy)`` is what questions talk about
("moves to the left"); the camera pan shifts everything on screen, so an object's screen
position is ``(x0, y0) + (v - pan) t``.  Sizes and speeds in :class:`SceneConfig` are given
for a 64-pixel image and scaled with the resolution.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from evspec.data.world.tables import COLOUR_HUES, DIRECTIONS, SHAPES, SPEEDS

_REF_RES = 64.0  # sizes and speeds in SceneConfig are for this resolution


def _range(name: str, pair: tuple[float, float], lo: float = 0.0) -> None:
    a, b = pair
    if not (lo <= a <= b):
        raise ValueError(
            f"SceneConfig.{name} = {pair} must be an increasing pair (min, max) with min >= {lo}"
        )


@dataclass(frozen=True)
class SceneConfig:
    """How scenes are sampled.  Pixel sizes and speeds are for a 64x64 image."""

    resolution: int = 64
    duration_s: float = 1.0
    min_objects: int = 1
    max_objects: int = 3
    p_static: float = 0.3  # per object (at least one object moves unless the scene is still)
    p_still_scene: float = 0.05  # probability that nothing moves at all
    p_pan: float = 0.25  # probability of a slow camera pan
    radius_px: tuple[float, float] = (5.0, 8.0)
    slow_px_s: tuple[float, float] = (8.0, 14.0)
    fast_px_s: tuple[float, float] = (20.0, 28.0)
    pan_px_s: tuple[float, float] = (2.0, 5.0)
    background: tuple[float, float] = (0.10, 0.32)
    texture_amplitude: float = 0.04
    texture_wavelength_px: tuple[float, float] = (20.0, 60.0)

    def __post_init__(self) -> None:
        if self.resolution < 16:
            raise ValueError(f"SceneConfig.resolution = {self.resolution}; use at least 16 pixels")
        if self.duration_s <= 0:
            raise ValueError(f"SceneConfig.duration_s = {self.duration_s}; must be > 0")
        if not 1 <= self.min_objects <= self.max_objects <= min(len(SHAPES), len(COLOUR_HUES)):
            raise ValueError(
                f"SceneConfig objects ({self.min_objects}, {self.max_objects}) must satisfy "
                f"1 <= min_objects <= max_objects <= {min(len(SHAPES), len(COLOUR_HUES))} "
                "(objects in a scene have distinct shapes and colours)"
            )
        for name in ("p_static", "p_still_scene", "p_pan"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"SceneConfig.{name} = {v} must be a probability in [0, 1]")
        for name in ("radius_px", "slow_px_s", "fast_px_s", "pan_px_s", "texture_wavelength_px"):
            _range(name, getattr(self, name))
        if self.radius_px[0] <= 1.0:
            raise ValueError("SceneConfig.radius_px must start above 1 pixel")
        if self.pan_px_s[1] >= self.slow_px_s[0]:
            raise ValueError(
                f"SceneConfig.pan_px_s {self.pan_px_s} must stay below slow_px_s {self.slow_px_s} "
                "so that the camera pan cannot be mistaken for object motion"
            )
        if self.slow_px_s[1] >= self.fast_px_s[0]:
            raise ValueError(
                f"SceneConfig.slow_px_s {self.slow_px_s} must end below fast_px_s "
                f"{self.fast_px_s} (the two speed classes must not overlap)"
            )
        _range("background", self.background, lo=0.0)
        if self.background[0] - self.texture_amplitude < 0.02 or self.background[1] > 0.45:
            raise ValueError(
                f"SceneConfig.background {self.background} with texture_amplitude "
                f"{self.texture_amplitude} must stay within [0.02, 0.45] (objects are brighter)"
            )

    @property
    def scale(self) -> float:
        return self.resolution / _REF_RES


@dataclass(frozen=True)
class ObjectSpec:
    """One object.  ``motion`` is ``"static"`` or a key of ``DIRECTIONS``; ``speed`` is
    ``"slow"``/``"fast"`` or ``None`` when static.  ``x0, y0``: screen position at t = 0;
    ``vx, vy``: world velocity in px/s; ``radius``: px."""

    shape: str
    colour: str
    radius: float
    x0: float
    y0: float
    vx: float
    vy: float
    motion: str
    speed: str | None

    @property
    def moving(self) -> bool:
        return self.motion != "static"


@dataclass(frozen=True)
class TextureWave:
    """One low-frequency sinusoid of the background: ``amplitude * sin(2 pi (fx X + fy Y) + phase)``
    over world coordinates (cycles per pixel)."""

    amplitude: float
    fx: float
    fy: float
    phase: float


@dataclass(frozen=True)
class SceneSpec:
    """Everything needed to render a clip deterministically."""

    width: int
    height: int
    duration_s: float
    background: float
    texture: tuple[TextureWave, ...]
    pan: tuple[float, float]  # camera velocity, px/s (world seen moving by -pan)
    objects: tuple[ObjectSpec, ...]

    @property
    def moving(self) -> tuple[ObjectSpec, ...]:
        return tuple(o for o in self.objects if o.moving)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SceneSpec:
        return cls(
            width=int(d["width"]),
            height=int(d["height"]),
            duration_s=float(d["duration_s"]),
            background=float(d["background"]),
            texture=tuple(TextureWave(**w) for w in d["texture"]),
            pan=(float(d["pan"][0]), float(d["pan"][1])),
            objects=tuple(ObjectSpec(**o) for o in d["objects"]),
        )


def _start_range(size: int, margin: float, shift: float) -> tuple[float, float]:
    """Start coordinates that keep ``[start, start + shift]`` inside ``[margin, size - margin]``."""
    lo = margin - min(0.0, shift)
    hi = size - margin - max(0.0, shift)
    if hi < lo:  # too fast for the frame: centre the path
        mid = (size - shift) / 2.0
        return mid, mid
    return lo, hi


@dataclass
class _Sampler:
    cfg: SceneConfig
    rng: np.random.Generator
    placed: list[tuple[float, float, float]] = field(default_factory=list)

    def uniform(self, pair: tuple[float, float]) -> float:
        return float(self.rng.uniform(pair[0], pair[1]))

    def motion(self) -> tuple[str, str | None, float, float]:
        direction = str(self.rng.choice(list(DIRECTIONS)))
        speed = str(self.rng.choice(list(SPEEDS)))
        px_s = self.uniform(self.cfg.slow_px_s if speed == "slow" else self.cfg.fast_px_s)
        px_s *= self.cfg.scale
        ux, uy = DIRECTIONS[direction]
        return direction, speed, px_s * ux, px_s * uy

    def position(self, radius: float, shift: tuple[float, float]) -> tuple[float, float]:
        """A start position keeping the whole path on screen, away from placed objects."""
        res, margin = self.cfg.resolution, radius + 1.0
        rx = _start_range(res, margin, shift[0])
        ry = _start_range(res, margin, shift[1])
        best, best_gap = (rx[0], ry[0]), -math.inf
        for _ in range(24):
            x, y = self.uniform(rx), self.uniform(ry)
            gap = min(
                (math.hypot(x - px, y - py) - radius - pr for px, py, pr in self.placed),
                default=math.inf,
            )
            if gap > best_gap:
                best, best_gap = (x, y), gap
            if gap >= 1.0:
                break
        self.placed.append((best[0], best[1], radius))
        return best


def sample_scene(rng: np.random.Generator, cfg: SceneConfig) -> SceneSpec:
    """Draw one scene.  Deterministic given the generator state."""
    s = _Sampler(cfg, rng)
    res, scale = cfg.resolution, cfg.scale
    # Background: grey level plus low-frequency texture.
    background = s.uniform(cfg.background)
    waves = []
    for _ in range(3):
        wavelength = s.uniform(cfg.texture_wavelength_px) * scale
        angle = s.uniform((0.0, 2 * math.pi))
        waves.append(
            TextureWave(
                amplitude=cfg.texture_amplitude / 3.0 * s.uniform((0.5, 1.0)),
                fx=math.cos(angle) / wavelength,
                fy=math.sin(angle) / wavelength,
                phase=s.uniform((0.0, 2 * math.pi)),
            )
        )
    pan = (0.0, 0.0)
    if rng.random() < cfg.p_pan:
        angle = s.uniform((0.0, 2 * math.pi))
        speed = s.uniform(cfg.pan_px_s) * scale
        pan = (speed * math.cos(angle), speed * math.sin(angle))
    # Objects: distinct shapes and colours.
    n = int(rng.integers(cfg.min_objects, cfg.max_objects + 1))
    shapes = [str(v) for v in rng.choice(list(SHAPES), size=n, replace=False)]
    colours = [str(v) for v in rng.choice(list(COLOUR_HUES), size=n, replace=False)]
    still_scene = rng.random() < cfg.p_still_scene
    moving = [not still_scene and rng.random() >= cfg.p_static for _ in range(n)]
    if not still_scene and not any(moving):
        moving[int(rng.integers(n))] = True
    objects = []
    for shape, colour, moves in zip(shapes, colours, moving, strict=True):
        radius = s.uniform(cfg.radius_px) * scale
        motion, speed, vx, vy = ("static", None, 0.0, 0.0)
        if moves:
            motion, speed, vx, vy = s.motion()
        shift = ((vx - pan[0]) * cfg.duration_s, (vy - pan[1]) * cfg.duration_s)
        x0, y0 = s.position(radius, shift)
        objects.append(ObjectSpec(shape, colour, radius, x0, y0, vx, vy, motion, speed))
    return SceneSpec(
        width=res,
        height=res,
        duration_s=cfg.duration_s,
        background=background,
        texture=tuple(waves),
        pan=pan,
        objects=tuple(objects),
    )
