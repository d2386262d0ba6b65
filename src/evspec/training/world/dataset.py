"""A world split as training data: tokenised examples plus the clips pre-decoded once.

Each question of each clip is one :class:`Example`: the model's own prompt ids (built by
the wrapper, exactly as at inference), the reference answer's ids plus EOS (the only tokens
with a loss), and the row of its clip in the pre-decoded array.

Pre-decoding reads every clip of the split once, in a process pool, into one uint8 array
``[N, K, S, S, 3]``: for the target the K = 8 video frames sampled uniformly over the clip;
for the drafter the K = 5 event images rendered with EventGPT's rendering over the whole
clip (or the manifest's window) on the sensor-sized canvas.  Frames whose size differs
from the vision tower's S are resized (shortest side, bicubic) and centre-cropped with
PIL, as the CLIP image processors do; at the world's 64 px this is the identity.  Training
then never touches the disk.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm
from evspec.progress import bar_disable

from evspec.data.manifest import ClipEntry, load_manifest
from evspec.training.world.aux_labels import PatchLabels, event_labels, frame_labels

MANIFEST = "manifest.json"


@dataclass(frozen=True)
class Example:
    """One question: ``prompt`` ids (target: ``<video>`` expanded; drafter: one -200
    placeholder), ``answer`` ids ending in EOS, ``clip`` = row in the pixel array."""

    clip: int
    prompt: tuple[int, ...]
    answer: tuple[int, ...]
    qtype: str
    question: str
    reference: str
    fields: dict[str, str] = field(default_factory=dict)


@dataclass
class WorldSplit:
    """``pixels``: ``[N, K, S, S, 3]`` uint8, row i = clip ``clip_ids[i]``; ``labels``:
    the per-patch auxiliary labels of the same rows (``load_split(aux_labels=True)``)."""

    name: str
    clip_ids: list[str]
    pixels: np.ndarray
    examples: list[Example]
    labels: PatchLabels | None = None

    def __post_init__(self) -> None:
        if self.pixels.ndim != 5 or self.pixels.dtype != np.uint8:
            raise ValueError(f"WorldSplit.pixels must be uint8 [N, K, S, S, 3], got "
                             f"{self.pixels.dtype} {self.pixels.shape}")


# -- reference answers -----------------------------------------------------------------------


def split_entries(data: Path, split: str, max_clips: int = 0) -> list[ClipEntry]:
    """The clips of ``split`` in manifest order (the first ``max_clips`` when > 0)."""
    path = Path(data) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing: --data must be a folder written by `evspec world generate`"
        )
    entries = load_manifest(path).split(split)
    if not entries:
        raise ValueError(f"{path}: the {split!r} split has no clips; generate more clips")
    return entries[:max_clips] if max_clips > 0 else entries


def world_extra(data: Path, split: str) -> dict[str, dict[str, Any]]:
    """The generator's sidecar for ``split`` (drafter-style answers, fields, scenes)."""
    from evspec.data.world.generate import load_world_extra

    return load_world_extra(data, split)


def references(
    entries: list[ClipEntry], extra: dict[str, dict[str, Any]], style: str
) -> list[list[tuple[str, str, str, dict[str, str]]]]:
    """Per clip, per question: ``(question, qtype, reference answer in style, fields)``."""
    out = []
    for e in entries:
        side = extra.get(e.id)
        if side is None or len(side["qa"]) != len(e.questions):
            raise ValueError(
                f"world sidecar has no entry (or a different question count) for clip {e.id!r}; "
                "regenerate the world"
            )
        rows = []
        for qa, more in zip(e.questions, side["qa"], strict=True):
            answer = qa.answer if style == "target" else more["answer_drafter"]
            if not answer or not qa.qtype:
                raise ValueError(f"clip {e.id!r}: question {qa.question!r} has no answer or type")
            rows.append((qa.question, qa.qtype, answer, dict(more.get("fields", {}))))
        out.append(rows)
    return out


# -- pre-decoding ---------------------------------------------------------------------------


def fit_images(images: np.ndarray, size: int) -> np.ndarray:
    """``[K, H, W, 3]`` uint8 -> ``[K, size, size, 3]``: resize the shortest side to
    ``size`` (bicubic) and centre-crop, as CLIP preprocessing; identity at the right size."""
    k, h, w, _ = images.shape
    if h == size and w == size:
        return images
    from PIL import Image

    if h <= w:
        nh, nw = size, max(size, int(size * w / h))
    else:
        nh, nw = max(size, int(size * h / w)), size
    top, left = (nh - size) // 2, (nw - size) // 2
    out = np.empty((k, size, size, 3), dtype=np.uint8)
    for i in range(k):
        im = Image.fromarray(images[i]).resize((nw, nh), Image.Resampling.BICUBIC)
        out[i] = np.asarray(im)[top : top + size, left : left + size]
    return out


def decode_clip(args: tuple[ClipEntry, str, str, int, int]) -> np.ndarray:
    """One clip -> ``[K, S, S, 3]`` uint8 (``kind``: ``"video"`` or ``"events"``)."""
    from evspec.data.loading import load_clip_inputs

    entry, root, kind, count, size = args
    if kind == "video":
        if entry.video is None:
            raise ValueError(f"clip {entry.id!r} has no video; the target needs frames")
        video, _ = load_clip_inputs(
            ClipEntry(entry.id, None, entry.video), root, num_frames=count, warn_window=False
        )
        assert video is not None
        return fit_images(video, size)
    if entry.events is None:
        raise ValueError(f"clip {entry.id!r} has no events; the drafter needs an event stream")
    bare = ClipEntry(entry.id, entry.events, None, entry.window_us)
    _, images = load_clip_inputs(bare, root, n_event_images=count, canvas="sensor", warn_window=False)
    assert images is not None
    return fit_images(images, size)


def _pool_map(fn: Any, jobs: list[Any], *, workers: int, progress: bool, desc: str) -> Iterator[Any]:
    """``fn(job)`` for every job, in order, by ``workers`` processes (in this process when
    1 or few jobs), with a progress bar."""
    bar = tqdm(total=len(jobs), desc=desc, unit="clip", disable=bar_disable(progress))
    try:
        if workers <= 1 or len(jobs) < 8:
            for job in jobs:
                yield fn(job)
                bar.update(1)
            return
        ctx = multiprocessing.get_context("spawn")  # the parent may hold CUDA
        chunk = max(1, min(64, len(jobs) // (workers * 4)))
        with ctx.Pool(min(workers, len(jobs))) as pool:
            for out in pool.imap(fn, jobs, chunksize=chunk):
                yield out
                bar.update(1)
    finally:
        bar.close()


def predecode(
    entries: list[ClipEntry],
    root: Path,
    kind: str,
    count: int,
    size: int,
    *,
    workers: int = 1,
    progress: bool = True,
    desc: str = "decoding clips",
) -> np.ndarray:
    """All clips -> ``[N, count, size, size, 3]`` uint8, decoded by ``workers`` processes."""
    if kind not in ("video", "events"):
        raise ValueError(f"predecode: kind must be 'video' or 'events', got {kind!r}")
    jobs = [(e, str(root), kind, count, size) for e in entries]
    out = np.empty((len(jobs), count, size, size, 3), dtype=np.uint8)
    for i, arr in enumerate(_pool_map(decode_clip, jobs, workers=workers, progress=progress, desc=desc)):
        out[i] = arr
    return out


def clip_labels(args: tuple[dict[str, Any], str, int, int, float]) -> PatchLabels:
    """One clip's auxiliary labels from its scene spec (a process-pool job)."""
    from evspec.data.world.scene import SceneSpec

    scene_dict, role, count, grid, fps = args
    scene = SceneSpec.from_dict(scene_dict)
    if role == "target":
        n_frames = round(scene.duration_s * fps)
        return frame_labels(scene, n_video_frames=n_frames, fps=fps, num_frames=count, grid=grid)
    return event_labels(scene, n_images=count, grid=grid)


def patch_labels(
    data: Path, entries: list[ClipEntry], extra: dict[str, dict[str, Any]], role: str,
    *, count: int, size: int, tokens_per_image: int, workers: int = 1, progress: bool = True,
) -> PatchLabels:
    """The auxiliary labels ``[N, count, g * g]`` of ``entries`` from their scene specs
    (``g * g + 1 = tokens_per_image``), computed by ``workers`` processes."""
    grid = int(round((tokens_per_image - 1) ** 0.5))
    if grid * grid + 1 != tokens_per_image:
        raise ValueError(f"{tokens_per_image} tokens per image is not a square patch grid plus CLS")
    fps = float(load_manifest(Path(data) / MANIFEST).meta.get("video_fps", 0))
    if role == "target" and fps <= 0:
        raise ValueError(f"{data}/{MANIFEST}: meta.video_fps is missing; regenerate the world")
    jobs = []
    for e in entries:
        scene = extra[e.id]["scene"]
        if scene["width"] != size or scene["height"] != size:
            raise ValueError(
                f"clip {e.id!r} is {scene['width']}x{scene['height']} px but the vision tower takes {size} "
                "px; auxiliary labels need them equal (train with --aux-weight 0)"
            )
        jobs.append((scene, role, count, grid, fps))
    rows = list(_pool_map(clip_labels, jobs, workers=workers, progress=progress, desc="patch labels"))
    return PatchLabels.stack(rows)


# -- tokenising ------------------------------------------------------------------------------


def answer_ids(tokenizer: Any, answer: str, eos: int) -> tuple[int, ...]:
    """The answer as the model emits it after ``ASSISTANT:``: a leading space, then EOS."""
    ids = list(tokenizer(" " + answer.strip(), add_special_tokens=False)["input_ids"])
    unk = tokenizer.unk_token_id
    if unk is not None and unk in ids:
        raise ValueError(f"answer {answer!r} has words outside the world tokenizer")
    return (*ids, eos)


def load_split(
    data: str | Path,
    split: str,
    model: Any,
    role: str,
    *,
    workers: int = 1,
    max_clips: int = 0,
    progress: bool = True,
    aux_labels: bool = False,
) -> WorldSplit:
    """Examples and pre-decoded pixels of ``split`` for ``model`` (a world wrapper).

    ``role`` picks the inputs (target: video frames; drafter: event images) and the answer
    style (target- or drafter-style references).  ``aux_labels``: also the per-patch
    labels of the auxiliary heads (:mod:`evspec.training.world.aux_labels`)."""
    data = Path(data)
    entries = split_entries(data, split, max_clips)
    extra = world_extra(data, split)
    refs = references(entries, extra, role)
    if role == "target":
        kind, count, size = "video", model.num_frames, model.config.vision_config.image_size
        per_image = model.tokens_per_frame
    elif role == "drafter":
        kind, count, size = "events", model.n_event_images, model.config.image_size
        per_image = model.config.tokens_per_image
    else:
        raise ValueError(f"role = {role!r}: use 'target' or 'drafter'")
    prompts: dict[str, tuple[int, ...]] = {}
    examples = []
    for row, rows in enumerate(refs):
        for question, qtype, answer, fields in rows:
            if question not in prompts:
                prompts[question] = tuple(model.build_prompt_ids(question).tolist())
            examples.append(
                Example(
                    clip=row,
                    prompt=prompts[question],
                    answer=answer_ids(model.tokenizer, answer, model.eos_token_id),
                    qtype=qtype,
                    question=question,
                    reference=answer,
                    fields=fields,
                )
            )
    pixels = predecode(
        entries, data, kind, count, size, workers=workers, progress=progress,
        desc=f"decoding {split} clips ({kind})",
    )
    labels = None
    if aux_labels:
        labels = patch_labels(data, entries, extra, role, count=count, size=size,
                              tokens_per_image=per_image, workers=workers, progress=progress)
    return WorldSplit(split, [e.id for e in entries], pixels, examples, labels)
