"""Where benchmark requests come from: a dataset manifest, or random frames.

``--dataset PATH`` reads a manifest (``evspec.data.manifest``) and yields one item per
(clip, question); ``--dataset random:N`` builds N requests with random frames and event
images, for timing at real scale without data (acceptance is meaningless there: use the
acceptance-controlled mode).  Items load lazily, so a bad clip fails inside the run, where
it is recorded as failed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from evspec.bench.config import BenchItem
from evspec.models.request import Request

#: questions of the random source, one per type (answers do not exist for random frames)
RANDOM_QUESTIONS: tuple[tuple[str, str], ...] = (
    ("describe", "Describe what happens in the video."),
    ("moving", "What is moving in the scene?"),
    ("direction", "In which direction does the object move?"),
    ("colour", "What colour is the largest object?"),
    ("count", "How many objects are there?"),
)


@dataclass(frozen=True)
class RandomSource:
    """Shapes of the random requests: ``num_frames`` video frames of ``frame_size``² pixels
    and ``n_event_images`` event images of ``event_size`` = (height, width)."""

    n: int
    num_frames: int = 8
    frame_size: int = 224
    n_event_images: int = 5
    event_size: tuple[int, int] = (336, 336)
    seed: int = 0

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError(f"random dataset needs N >= 1 requests (random:N), got {self.n}")
        for name in ("num_frames", "frame_size", "n_event_images"):
            if getattr(self, name) < 1:
                raise ValueError(f"RandomSource.{name} must be >= 1, got {getattr(self, name)}")
        if len(self.event_size) != 2 or min(self.event_size) < 1:
            raise ValueError(f"RandomSource.event_size must be (height, width) >= 1, got {self.event_size}")

    def _load(self, i: int) -> Request:
        rng = np.random.default_rng([self.seed, i])
        s = self.frame_size
        video = rng.integers(0, 256, (self.num_frames, s, s, 3), dtype=np.uint8)  # [T, H, W, 3]
        h, w = self.event_size
        events = rng.integers(0, 256, (self.n_event_images, h, w, 3), dtype=np.uint8)  # [n, H, W, 3]
        qtype, question = RANDOM_QUESTIONS[i % len(RANDOM_QUESTIONS)]
        return Request(question, video=video, event_images=events, clip_id=f"random-{i}", qtype=qtype)

    def items(self) -> list[BenchItem]:
        out = []
        for i in range(self.n):
            qtype, question = RANDOM_QUESTIONS[i % len(RANDOM_QUESTIONS)]
            out.append(
                BenchItem(
                    request_id=f"random-{i}",
                    load=lambda i=i: self._load(i),
                    clip_id=f"random-{i}",
                    qtype=qtype,
                    question=question,
                )
            )
        return out


def render_options(meta: dict) -> tuple[str, bool]:
    """``(canvas, warn_window)`` for a manifest's event streams (see
    :func:`evspec.data.loading.manifest_render_options`)."""
    from evspec.data.loading import manifest_render_options

    return manifest_render_options(meta)


def manifest_items(
    path: Path, *, split: str | None = "test", n_event_images: int = 5, num_frames: int = 8
) -> list[BenchItem]:
    """One item per (clip, question) of the manifest at ``path`` (clips of ``split`` only;
    None = all); ids ``clip_id#q``."""
    from evspec.data.loading import load_clip_inputs
    from evspec.data.manifest import load_manifest

    manifest = load_manifest(path)
    canvas, warn = render_options(manifest.meta)
    clips = manifest.clips if split is None else manifest.split(split)
    if not clips:
        have = sorted({c.split for c in manifest.clips})
        raise ValueError(f"{path}: no clips in split {split!r} (the manifest has {have}); pass --split")
    items: list[BenchItem] = []
    for entry in clips:
        for q, qa in enumerate(entry.questions):

            def load(entry=entry, qa=qa) -> Request:
                video, events = load_clip_inputs(
                    entry, manifest.root, n_event_images=n_event_images, num_frames=num_frames,
                    canvas=canvas, warn_window=warn,
                )
                return Request(qa.question, video=video, event_images=events, clip_id=entry.id, qtype=qa.qtype)

            items.append(
                BenchItem(
                    request_id=f"{entry.id}#{q}".replace("|", "/"),
                    load=load,
                    clip_id=entry.id,
                    qtype=qa.qtype,
                    question=qa.question,
                )
            )
    if not items:
        raise ValueError(f"{path}: the clips of split {split!r} have no questions to ask")
    return items


def dataset_items(
    spec: str,
    *,
    limit: int | None = None,
    num_frames: int = 8,
    frame_size: int = 224,
    n_event_images: int = 5,
    event_size: tuple[int, int] = (336, 336),
    seed: int = 0,
    split: str | None = "test",
) -> list[BenchItem]:
    """Items for ``--dataset``: ``random:N`` or a manifest path (its ``split``); the first
    ``limit`` only."""
    if limit is not None and limit < 1:
        raise ValueError(f"--limit must be >= 1, got {limit}")
    if spec.startswith("random:"):
        try:
            n = int(spec.split(":", 1)[1])
        except ValueError as exc:
            raise ValueError(f"--dataset {spec!r}: expected random:N with an integer N") from exc
        source = RandomSource(
            n, num_frames=num_frames, frame_size=frame_size,
            n_event_images=n_event_images, event_size=event_size, seed=seed,
        )
        items = source.items()
    else:
        path = Path(spec)
        if not path.exists():
            raise FileNotFoundError(f"--dataset {spec}: no such manifest (or use random:N)")
        items = manifest_items(path, split=split, n_event_images=n_event_images, num_frames=num_frames)
    return items[:limit] if limit is not None else items
