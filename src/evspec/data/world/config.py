"""The generator's one config: scene sampling, event simulation, timing, questions, splits."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from evspec.data.world.scene import SceneConfig
from evspec.data.world.simulate import EventConfig
from evspec.data.world.tables import QTYPES

VIDEO_FORMATS: tuple[str, ...] = ("png", "mp4")


@dataclass(frozen=True)
class WorldConfig:
    """Everything that decides what ``world generate`` writes (together with the seed).

    ``render_hz``: internal render rate the events are simulated from; ``video_fps``: RGB
    frames kept for the video (must divide ``render_hz``); ``split_fractions``: train /
    validation / test shares by clip; ``video_format``: ``"png"`` (lossless frame folder)
    or ``"mp4"``.
    """

    scene: SceneConfig = field(default_factory=SceneConfig)
    events: EventConfig = field(default_factory=EventConfig)
    render_hz: int = 200
    video_fps: int = 20
    qtypes: tuple[str, ...] = QTYPES
    split_fractions: tuple[float, float, float] = (0.90, 0.05, 0.05)
    video_format: str = "png"

    def __post_init__(self) -> None:
        if self.render_hz <= 0 or self.video_fps <= 0:
            raise ValueError(
                f"WorldConfig render_hz = {self.render_hz} and video_fps = {self.video_fps} "
                "must be positive"
            )
        if self.render_hz % self.video_fps:
            raise ValueError(
                f"WorldConfig.render_hz = {self.render_hz} must be a multiple of video_fps = "
                f"{self.video_fps} (video frames are taken from the internal frames)"
            )
        steps = self.scene.duration_s * self.render_hz
        if abs(steps - round(steps)) > 1e-9 or round(steps) < 1:
            raise ValueError(
                f"WorldConfig: duration_s * render_hz = {steps} must be a positive integer"
            )
        if self.render_hz > 5000:
            raise ValueError(f"WorldConfig.render_hz = {self.render_hz}; use at most 5000")
        bad = [q for q in self.qtypes if q not in QTYPES]
        if bad or not self.qtypes:
            raise ValueError(
                f"WorldConfig.qtypes {self.qtypes}: choose a non-empty subset of {QTYPES}"
            )
        fr = self.split_fractions
        if len(fr) != 3 or any(f < 0 for f in fr) or abs(sum(fr) - 1.0) > 1e-6 or fr[0] <= 0:
            raise ValueError(
                f"WorldConfig.split_fractions = {fr}: give (train, validation, test) shares, "
                "non-negative, summing to 1, train > 0"
            )
        if self.video_format not in VIDEO_FORMATS:
            raise ValueError(
                f"WorldConfig.video_format = {self.video_format!r}; choose one of {VIDEO_FORMATS}"
            )

    @property
    def n_steps(self) -> int:
        """Internal frames after the first (the simulator sees ``n_steps + 1`` frames)."""
        return round(self.scene.duration_s * self.render_hz)

    @property
    def n_video_frames(self) -> int:
        return round(self.scene.duration_s * self.video_fps)

    @property
    def duration_us(self) -> int:
        return round(self.scene.duration_s * 1_000_000)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> WorldConfig:
        scene = {k: tuple(v) if isinstance(v, list) else v for k, v in d["scene"].items()}
        return cls(
            scene=SceneConfig(**scene),
            events=EventConfig(**d["events"]),
            render_hz=int(d["render_hz"]),
            video_fps=int(d["video_fps"]),
            qtypes=tuple(d["qtypes"]),
            split_fractions=tuple(d["split_fractions"]),  # type: ignore[arg-type]
            video_format=str(d["video_format"]),
        )
