"""The DSEC clip builder (``evspec data dsec``): fixed-duration clips of events + video.

Input: a DSEC split folder (e.g. ``train/``) holding one folder per sequence, each with
``events/left/events.h5``, ``images/left/rectified/*.png`` and ``images/timestamps.txt``
(µs, one per line; DSEC ships events and images as separate downloads -- unpack both into
the same split folder).

For each sequence: windows ``[t0, t0 + duration)`` stepping by ``duration * (1 - overlap)``
over the image-timestamp range; a window with fewer than ``min_events`` events (empty) or
fewer than ``min_frames`` images is skipped.  Each clip is written as
``OUT/clips/<sequence>-<k>/events.npz`` (the window's events, absolute µs) and
``video.mp4`` (the window's images at 20 fps), under a temporary folder renamed into place
once both files are complete -- so a clip is either whole or absent.  ``OUT/manifest.json``
is written (atomically) at the end, listing every clip with the chosen question set.

Resumable: rerunning with the same settings keeps finished clips and rebuilds only the
rest (stale temporary folders from a killed run are removed).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from evspec.data.atomic import atomic_dir, atomic_write_text
from evspec.data.runlock import holds_run_lock
from evspec.data.clipio import save_events
from evspec.data.dsec_h5 import DsecEventsFile
from evspec.data.dsec_questions import QUESTION_SETS
from evspec.data.errors import DataError
from evspec.data.events import EventStream
from evspec.data.manifest import SPLITS, QA, ClipEntry, Manifest, save_manifest
from evspec.data.video import list_frame_files, write_video
from evspec.data.windows import TimeWindows

EVENTS_H5 = Path("events/left/events.h5")
IMAGES_DIR = Path("images/left/rectified")
TIMESTAMPS = Path("images/timestamps.txt")
CLIPS_DIR = "clips"
MANIFEST_NAME = "manifest.json"


@dataclass(frozen=True)
class DsecBuildConfig:
    """Settings of one build; validated on construction."""

    duration_us: int
    overlap: float = 0.5
    fps: int = 20
    split: str = "test"
    questions: tuple[str, ...] = QUESTION_SETS["dsec-top10"]
    question_set: str = "dsec-top10"
    min_events: int = 5
    min_frames: int = 8
    lossless: bool = False
    sequences: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        TimeWindows(self.duration_us, self.overlap)  # validates length and overlap
        if self.fps < 1:
            raise ValueError(
                f"DsecBuildConfig.fps must be >= 1 (DSEC images are 20 Hz), got {self.fps}"
            )
        if self.split not in SPLITS:
            raise ValueError(
                f"DsecBuildConfig.split must be one of {list(SPLITS)}, got {self.split!r}"
            )
        if not self.questions or not all(isinstance(q, str) and q.strip() for q in self.questions):
            raise ValueError(
                "DsecBuildConfig.questions must be a non-empty list of non-empty strings"
            )
        if self.min_events < 1 or self.min_frames < 1:
            raise ValueError("DsecBuildConfig.min_events and min_frames must be >= 1")


@dataclass
class DsecBuildReport:
    """What a build did: clip counts by outcome (``written`` + ``reused`` = manifest size)."""

    windows: int = 0
    written: int = 0
    reused: int = 0
    skipped_empty: int = 0
    skipped_few_frames: int = 0
    manifest: Path | None = None
    per_sequence: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class _Sequence:
    name: str
    events_h5: Path
    image_files: list[Path]
    image_t: np.ndarray  # [F] int64 µs, sorted


def _read_timestamps(path: Path) -> np.ndarray:
    try:
        lines = [s.strip() for s in path.read_text().splitlines()]
        t = np.array([int(s) for s in lines if s], dtype=np.int64)
    except FileNotFoundError:
        raise DataError(str(path), "file", "does not exist") from None
    except ValueError as exc:
        raise DataError(str(path), "timestamps", f"not one integer per line ({exc})") from None
    if t.size and np.any(np.diff(t) < 0):
        raise DataError(str(path), "timestamps", "not sorted in increasing order")
    return t


def find_sequences(root: Path, names: Sequence[str] | None = None) -> list[_Sequence]:
    """The sequences of a DSEC split folder (sorted), checked for the expected files."""
    if not root.is_dir():
        raise DataError(str(root), "root", "is not a folder")
    candidates = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if names is not None:
        unknown = sorted(set(names) - {p.name for p in candidates})
        if unknown:
            raise DataError(str(root), "sequences", f"not found: {unknown}")
        candidates = [p for p in candidates if p.name in set(names)]
    seqs = []
    for p in candidates:
        if not (p / EVENTS_H5).is_file():
            continue
        files = list_frame_files(p / IMAGES_DIR) if (p / IMAGES_DIR).is_dir() else []
        t = _read_timestamps(p / TIMESTAMPS)
        if len(files) != len(t):
            raise DataError(
                str(p / TIMESTAMPS), "timestamps",
                f"{len(t)} timestamps but {len(files)} images in {p / IMAGES_DIR}",
            )
        seqs.append(_Sequence(p.name, p / EVENTS_H5, files, t))
    if not seqs:
        raise DataError(str(root), "root", f"no sequence folder with {EVENTS_H5} found")
    return seqs


def load_question_set(spec: str) -> tuple[str, tuple[str, ...]]:
    """``(name, questions)`` from a set name (``dsec-top10``) or a file.

    Files: ``.json`` -- a list of strings or of objects with a ``"question"`` key (e.g. the
    research's ``top50_questions.json``); anything else -- one question per line.
    """
    if spec in QUESTION_SETS:
        return spec, QUESTION_SETS[spec]
    path = Path(spec)
    if not path.is_file():
        raise DataError(
            spec, "questions", f"neither a question set {sorted(QUESTION_SETS)} nor a file"
        )
    if path.suffix.lower() == ".json":
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise DataError(spec, "file", f"not valid JSON ({exc})") from None
        items = raw if isinstance(raw, list) else []
        items = [r.get("question") if isinstance(r, dict) else r for r in items]
        if not items or not all(isinstance(q, str) and q.strip() for q in items):
            raise DataError(
                spec, "questions", 'must be a JSON list of strings or of {"question": ...}'
            )
        questions = tuple(q.strip() for q in items)
    else:
        lines = path.read_text(encoding="utf-8").splitlines()
        questions = tuple(s.strip() for s in lines if s.strip())
        if not questions:
            raise DataError(spec, "questions", "the file holds no questions")
    return path.stem, questions


def clip_id(sequence: str, k: int) -> str:
    """Stable id of the k-th window of a sequence (stable across resumed runs)."""
    return f"{sequence}-{k:06d}"


def _read_frames(files: Sequence[Path]) -> np.ndarray:
    from PIL import Image

    frames = []
    for f in files:
        with Image.open(f) as im:
            frames.append(np.asarray(im.convert("RGB")))  # [H, W, 3]
    return np.stack(frames)  # [T, H, W, 3]


def _write_clip(
    out: Path, cid: str, events: EventStream, frames: np.ndarray, cfg: DsecBuildConfig
) -> None:
    """Both files into a temp folder, then one rename: the clip is whole or absent."""
    with atomic_dir(out / CLIPS_DIR / cid) as tmp:
        save_events(tmp / "events.npz", events)
        write_video(tmp / "video.mp4", frames, fps=cfg.fps, lossless=cfg.lossless)


def _settings_key(cfg: DsecBuildConfig) -> dict[str, object]:
    d = asdict(cfg)
    for k in ("split", "questions", "question_set", "sequences"):  # free to change on resume
        d.pop(k)
    return d


def _check_resume(out: Path, cfg: DsecBuildConfig) -> None:
    """Refuse to mix clips of different settings in one output folder."""
    stamp = out / CLIPS_DIR / ".settings.json"
    key = _settings_key(cfg)
    if stamp.is_file():
        try:
            old = json.loads(stamp.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise DataError(str(stamp), "file", f"not valid JSON ({exc}); delete it (and the "
                            "clips beside it) to rebuild") from None
        if old != key:
            raise DataError(
                str(out), "settings",
                f"the folder holds clips built with {old}, not {key}; use a new --out folder",
            )
    else:
        atomic_write_text(stamp, json.dumps(key, indent=1))
    for stale in (out / CLIPS_DIR).glob(".*.tmp"):  # left by a killed run
        shutil.rmtree(stale, ignore_errors=True)


@holds_run_lock("data dsec", lambda a: Path(a["out"]))
def build_dsec_clips(
    root: str | Path, out: str | Path, cfg: DsecBuildConfig, *, progress: bool = True
) -> DsecBuildReport:
    """Build clips from every sequence of the DSEC split at ``root`` into ``out``."""
    from tqdm import tqdm
    from evspec.progress import bar_disable

    root, out = Path(root), Path(out)
    seqs = find_sequences(root, cfg.sequences)
    (out / CLIPS_DIR).mkdir(parents=True, exist_ok=True)
    _check_resume(out, cfg)
    windows = TimeWindows(cfg.duration_us, cfg.overlap)
    plan = [
        (s, windows.spans(int(s.image_t[0]), int(s.image_t[-1]))) for s in seqs if len(s.image_t)
    ]
    report = DsecBuildReport(windows=sum(len(w) for _, w in plan))
    entries: list[ClipEntry] = []
    qas = [QA(q) for q in cfg.questions]
    bar = tqdm(total=report.windows, desc="dsec clips", unit="clip", disable=bar_disable(progress))
    try:
        for seq, spans in plan:
            n_seq = 0
            with DsecEventsFile(seq.events_h5) as h5:
                for k, (t0, t1) in enumerate(spans):
                    bar.update(1)
                    cid = clip_id(seq.name, k)
                    i0, i1 = np.searchsorted(seq.image_t, [t0, t1], side="left")
                    if i1 - i0 < cfg.min_frames:
                        report.skipped_few_frames += 1
                        continue
                    final = out / CLIPS_DIR / cid
                    if final.is_dir():
                        report.reused += 1
                    else:
                        i_ev0, i_ev1 = h5.index_range(t0, t1)
                        if i_ev1 - i_ev0 < cfg.min_events:
                            report.skipped_empty += 1
                            continue
                        events = h5.read_range(i_ev0, i_ev1)
                        frames = _read_frames(seq.image_files[i0:i1])
                        _write_clip(out, cid, events, frames, cfg)
                        report.written += 1
                    n_seq += 1
                    entries.append(ClipEntry(
                        cid, f"{CLIPS_DIR}/{cid}/events.npz", f"{CLIPS_DIR}/{cid}/video.mp4",
                        (t0, t1), cfg.split, list(qas),
                    ))
            report.per_sequence[seq.name] = n_seq
    finally:
        bar.close()
    meta = {
        "source": "dsec",
        "dsec_root": str(root),
        "duration_us": cfg.duration_us,
        "overlap": cfg.overlap,
        "fps": cfg.fps,
        "question_set": cfg.question_set,
        "min_events": cfg.min_events,
        "min_frames": cfg.min_frames,
        "video_codec": "libx264rgb (lossless)" if cfg.lossless else "libx264 yuv420p",
    }
    report.manifest = save_manifest(out / MANIFEST_NAME, Manifest(entries, out, meta))
    return report
