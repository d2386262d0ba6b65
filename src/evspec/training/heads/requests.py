"""(clip, question) requests from a dataset manifest, shared by ``collect`` and ``eval`` so
both read clips the same way (same frames, same event rendering, same keys)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from evspec.models.request import Request


@dataclass
class RequestItem:
    """One question; ``key`` = ``clip_id#q`` (stable: it keys resume and per-request
    pairing); ``load()`` reads the clip (the last clip is cached)."""

    key: str
    clip_id: str
    question: str
    qtype: str | None
    split: str
    load: Callable[[], Request]


class _ClipReader:
    """Reads clips with the models' frame/image counts; keeps the last clip read."""

    def __init__(self, root: Path, num_frames: int, n_event_images: int, canvas: str) -> None:
        self.root, self.num_frames, self.n_event_images, self.canvas = root, num_frames, n_event_images, canvas
        self._last: tuple[str, tuple[np.ndarray | None, np.ndarray | None]] | None = None

    def inputs(self, entry) -> tuple[np.ndarray | None, np.ndarray | None]:
        if self._last is not None and self._last[0] == entry.id:
            return self._last[1]
        from evspec.data.loading import load_clip_inputs

        got = load_clip_inputs(
            entry, self.root, n_event_images=self.n_event_images, num_frames=self.num_frames,
            canvas=self.canvas, warn_window=False,
        )
        self._last = (entry.id, got)
        return got


def manifest_requests(
    path: str | Path,
    splits: tuple[str, ...] = ("test",),
    *,
    num_frames: int,
    n_event_images: int,
    canvas: Literal["auto", "chunk", "data", "sensor"] = "auto",
    limit: int | None = None,
    shard: int = 0,
    num_shards: int = 1,
) -> list[RequestItem]:
    """Every (clip, question) of the manifest's ``splits``, in manifest order, the first
    ``limit`` of them; shard ``i`` of ``n`` keeps every n-th of those (from the i-th).
    ``canvas="auto"``: the manifest's own (the world's ``sensor``, else the EventGPT
    release's ``chunk``; :func:`~evspec.data.loading.manifest_render_options`)."""
    from evspec.data.manifest import load_manifest

    if not 0 <= shard < num_shards:
        raise ValueError(f"shard {shard} must be in [0, num_shards = {num_shards})")
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    manifest = load_manifest(Path(path))
    if canvas == "auto":
        from evspec.data.loading import manifest_render_options

        canvas = manifest_render_options(manifest.meta)[0]  # type: ignore[assignment]
    reader = _ClipReader(manifest.root, num_frames, n_event_images, canvas)
    items: list[RequestItem] = []
    for entry in manifest.clips:
        if entry.split not in splits:
            continue
        for q, qa in enumerate(entry.questions):

            def load(entry=entry, qa=qa) -> Request:
                video, events = reader.inputs(entry)
                return Request(qa.question, video=video, event_images=events, clip_id=entry.id, qtype=qa.qtype)

            items.append(RequestItem(f"{entry.id}#{q}".replace("|", "/"), entry.id, qa.question,
                                     qa.qtype, entry.split, load))
    if not items:
        have = sorted({c.split for c in manifest.clips})
        raise ValueError(f"{path}: no questions in split(s) {list(splits)} (the manifest has {have})")
    if limit is not None:
        items = items[:limit]
    return items[shard::num_shards]
