"""Dataset manifests: a JSON list of clips with their files, window, split and questions.

Schema (docs/data.md has the full description)::

    {"format": "evspec-manifest", "version": 1,
     "meta": {...free-form: source, question set, builder settings...},
     "clips": [{"id": "zurich_city_00_a-000003",
                "events": "events/zurich_city_00_a-000003.npz",   # or null
                "video": "video/zurich_city_00_a-000003.mp4",     # mp4 or frame folder, or null
                "window_us": [t0, t1],                             # or null = whole file
                "split": "train" | "val" | "test",
                "questions": [{"question": "...", "answer": "..." | null, "qtype": "..." | null}]}]}

Paths are POSIX paths relative to the manifest's folder.  ``window_us`` selects the events
``t0 <= t < t1`` (absolute µs) of the events file; the video file is always used whole.
``load_manifest`` checks the structure and reports every problem at once;
``check_manifest`` also opens every referenced file (``evspec data check``).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from evspec.data.atomic import atomic_write_text
from evspec.data.errors import DataError, Problem

__all__ = [
    "FORMAT_TAG", "FORMAT_VERSION", "SPLITS", "QA", "ClipEntry", "Manifest", "ManifestError",
    "atomic_write_text", "check_manifest", "load_manifest", "manifest_to_json",
    "parse_manifest", "save_manifest",
]

FORMAT_TAG = "evspec-manifest"
FORMAT_VERSION = 1
SPLITS = ("train", "val", "test")


@dataclass
class QA:
    """A question about a clip, its reference answer when known, and its type when known."""

    question: str
    answer: str | None = None
    qtype: str | None = None


@dataclass
class ClipEntry:
    """One clip.  ``events`` / ``video`` are paths relative to the manifest folder."""

    id: str
    events: str | None
    video: str | None
    window_us: tuple[int, int] | None = None
    split: str = "test"
    questions: list[QA] = field(default_factory=list)


@dataclass
class Manifest:
    """Clips plus the folder their paths are relative to (the manifest file's folder)."""

    clips: list[ClipEntry]
    root: Path
    meta: dict[str, Any] = field(default_factory=dict)

    def resolve(self, rel: str) -> Path:
        return self.root / rel

    def by_id(self, clip_id: str) -> ClipEntry:
        for c in self.clips:
            if c.id == clip_id:
                return c
        raise KeyError(f"no clip with id {clip_id!r} in the manifest at {self.root}")

    def split(self, name: str) -> list[ClipEntry]:
        return [c for c in self.clips if c.split == name]


class ManifestError(DataError):
    """A manifest with one or more problems; ``problems`` lists all of them."""

    def __init__(self, problems: list[Problem]) -> None:
        first = problems[0]
        more = "" if len(problems) == 1 else f" (and {len(problems) - 1} more problem(s))"
        super().__init__(first.file, first.field, first.reason + more)
        self.problems = problems

    def __str__(self) -> str:
        return "\n".join(str(p) for p in self.problems)


# -- parsing (collects every problem) ------------------------------------------------------
class _Collector:
    def __init__(self, file: str) -> None:
        self.file = file
        self.problems: list[Problem] = []

    def add(self, where: str, reason: str) -> None:
        self.problems.append(Problem(self.file, where, reason))


def _opt_str(c: _Collector, where: str, value: object) -> str | None:
    if value is None or isinstance(value, str):
        return value
    c.add(where, f"must be a string or null, got {type(value).__name__}")
    return None


def _path_field(c: _Collector, where: str, value: object) -> str | None:
    s = _opt_str(c, where, value)
    if s is not None:
        if not s.strip():
            c.add(where, "is an empty path; use null when the clip has no such file")
            return None
        if os.path.isabs(s) or PurePosixPath(s).is_absolute():
            c.add(where, f"absolute path {s!r}; paths must be relative to the manifest folder")
    return s


def _window(c: _Collector, where: str, value: object) -> tuple[int, int] | None:
    if value is None:
        return None
    ok = (
        isinstance(value, (list, tuple))
        and len(value) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    )
    if not ok:
        c.add(where, f"must be [t0_us, t1_us] (two integers) or null, got {value!r}")
        return None
    t0, t1 = int(value[0]), int(value[1])  # type: ignore[index]
    if t1 <= t0:
        c.add(where, f"t1_us={t1} must be greater than t0_us={t0}")
    return (t0, t1)


def _questions(c: _Collector, where: str, value: object) -> list[QA]:
    if value is None:
        return []
    if not isinstance(value, list):
        c.add(where, f"must be a list of {{question, answer, qtype}}, got {type(value).__name__}")
        return []
    out = []
    for j, q in enumerate(value):
        w = f"{where}[{j}]"
        if not isinstance(q, dict):
            c.add(w, f"must be an object with a 'question', got {type(q).__name__}")
            continue
        unknown = sorted(set(q) - {"question", "answer", "qtype"})
        if unknown:
            c.add(w, f"unknown key(s) {unknown}; allowed: question, answer, qtype")
        text = q.get("question")
        if not isinstance(text, str) or not text.strip():
            c.add(f"{w}.question", "must be a non-empty string")
            continue
        out.append(QA(text, _opt_str(c, f"{w}.answer", q.get("answer")),
                      _opt_str(c, f"{w}.qtype", q.get("qtype"))))
    return out


_CLIP_KEYS = {"id", "events", "video", "window_us", "split", "questions"}


def _clip(c: _Collector, i: int, raw: object) -> ClipEntry | None:
    where = f"clips[{i}]"
    if not isinstance(raw, dict):
        c.add(where, f"must be an object, got {type(raw).__name__}")
        return None
    cid = raw.get("id")
    if not isinstance(cid, str) or not cid.strip():
        c.add(f"{where}.id", "must be a non-empty string")
        cid = f"<clip {i}>"
    else:
        where = f"clips[{i}] (id={cid})"
    unknown = sorted(set(raw) - _CLIP_KEYS)
    if unknown:
        c.add(where, f"unknown key(s) {unknown}; allowed: {sorted(_CLIP_KEYS)}")
    events = _path_field(c, f"{where}.events", raw.get("events"))
    video = _path_field(c, f"{where}.video", raw.get("video"))
    if events is None and video is None:
        c.add(where, "has neither an events file nor a video; give at least one")
    split = raw.get("split", "test")
    if split not in SPLITS:
        c.add(f"{where}.split", f"is {split!r}; use one of {list(SPLITS)}")
    return ClipEntry(
        id=cid,
        events=events,
        video=video,
        window_us=_window(c, f"{where}.window_us", raw.get("window_us")),
        split=str(split),
        questions=_questions(c, f"{where}.questions", raw.get("questions")),
    )


def parse_manifest(raw: object, path: Path) -> tuple[Manifest, list[Problem]]:
    """Build a ``Manifest`` from decoded JSON, collecting every structural problem."""
    c = _Collector(str(path))
    clips: list[ClipEntry] = []
    meta: dict[str, Any] = {}
    if not isinstance(raw, dict):
        c.add("<top>", f"must be a JSON object with 'clips', got {type(raw).__name__}")
        return Manifest([], path.parent, {}), c.problems
    if raw.get("format") != FORMAT_TAG:
        c.add("format", f"is {raw.get('format')!r}, expected {FORMAT_TAG!r}")
    if raw.get("version") != FORMAT_VERSION:
        c.add("version", f"is {raw.get('version')!r}; this evspec reads version {FORMAT_VERSION}")
    if not isinstance(raw.get("meta", {}), dict):
        c.add("meta", "must be an object")
    else:
        meta = dict(raw.get("meta", {}))
    raw_clips = raw.get("clips")
    if not isinstance(raw_clips, list):
        c.add("clips", "must be a list of clip objects")
        raw_clips = []
    seen: dict[str, int] = {}
    for i, rc in enumerate(raw_clips):
        entry = _clip(c, i, rc)
        if entry is None:
            continue
        if entry.id in seen:
            c.add(f"clips[{i}].id", f"duplicate id {entry.id!r} (also clips[{seen[entry.id]}])")
        seen.setdefault(entry.id, i)
        clips.append(entry)
    return Manifest(clips, path.parent, meta), c.problems


def _read_json(path: Path) -> object:
    if not path.is_file():
        raise ManifestError([Problem(str(path), "file", "does not exist")])
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ManifestError([Problem(str(path), "file", f"not valid JSON ({exc})")]) from None


def load_manifest(path: str | Path) -> Manifest:
    """Read and validate a manifest; raises ``ManifestError`` listing every problem."""
    path = Path(path)
    manifest, problems = parse_manifest(_read_json(path), path)
    if problems:
        raise ManifestError(problems)
    return manifest


# -- writing ------------------------------------------------------------------------------
def _rebase(rel: str | None, old_root: Path, new_root: Path) -> str | None:
    if rel is None:
        return None
    if old_root.resolve() == new_root.resolve():
        return PurePosixPath(Path(rel).as_posix()).as_posix()
    return Path(os.path.relpath(old_root / rel, new_root)).as_posix()


def manifest_to_json(manifest: Manifest, new_root: Path | None = None) -> dict[str, Any]:
    """The JSON object for ``manifest``; paths rebased onto ``new_root`` when given."""
    root = manifest.root if new_root is None else new_root
    clips = []
    for e in manifest.clips:
        clips.append(
            {
                "id": e.id,
                "events": _rebase(e.events, manifest.root, root),
                "video": _rebase(e.video, manifest.root, root),
                "window_us": list(e.window_us) if e.window_us is not None else None,
                "split": e.split,
                "questions": [
                    {"question": q.question, "answer": q.answer, "qtype": q.qtype}
                    for q in e.questions
                ],
            }
        )
    return {"format": FORMAT_TAG, "version": FORMAT_VERSION, "meta": manifest.meta, "clips": clips}


def save_manifest(path: str | Path, manifest: Manifest) -> Path:
    """Write ``manifest`` as JSON at ``path`` (atomic).  Paths are rewritten relative to
    ``path``'s folder, so saving elsewhere than ``manifest.root`` keeps them pointing right.
    The structure is validated first; a bad manifest raises ``ManifestError`` and writes nothing.
    """
    path = Path(path)
    obj = manifest_to_json(manifest, path.parent)
    _, problems = parse_manifest(obj, path)
    if problems:
        raise ManifestError(problems)
    atomic_write_text(path, json.dumps(obj, indent=1, ensure_ascii=False) + "\n")
    return path


# -- deep check -----------------------------------------------------------------------------
def check_manifest(
    path: str | Path, *, num_frames: int = 8, n_event_images: int = 5, progress: bool = False
) -> list[Problem]:
    """Every problem with the manifest and the files it references, in one pass.

    Structure (as ``load_manifest``), then per clip: the events file exists, loads and
    validates, and its window holds at least ``n_event_images`` events; the video exists,
    decodes, and has at least ``num_frames`` frames; there is at least one question.
    Problems inside a referenced file name that file.  ``progress`` shows a tqdm bar.
    """
    from tqdm import tqdm
    from evspec.progress import bar_disable

    from evspec.data.clipio import load_events
    from evspec.data.video import read_video

    path = Path(path)
    try:
        raw = _read_json(path)
    except ManifestError as exc:
        return exc.problems
    manifest, problems = parse_manifest(raw, path)
    clips = tqdm(manifest.clips, desc="checking clips", unit="clip", disable=bar_disable(progress))
    for i, e in enumerate(clips):
        where = f"clips[{i}] (id={e.id})"
        if not e.questions:
            problems.append(Problem(str(path), f"{where}.questions", "no questions"))
        if e.events is not None:
            ev_path = manifest.resolve(e.events)
            if not ev_path.exists():
                problems.append(Problem(str(path), f"{where}.events", f"file not found: {ev_path}"))
            else:
                try:
                    stream = load_events(ev_path, e.window_us)
                    if len(stream) < n_event_images:
                        problems.append(Problem(
                            str(ev_path), "events",
                            f"{where}: {len(stream)} event(s) in the window, fewer than the "
                            f"{n_event_images} event images need",
                        ))
                except DataError as exc:
                    problems.append(exc.problem)
                except (ValueError, OSError, MemoryError) as exc:  # the next clip is checked too
                    problems.append(Problem(str(ev_path), "events", f"unreadable ({exc})"))
        if e.video is not None:
            v_path = manifest.resolve(e.video)
            if not v_path.exists():
                problems.append(Problem(str(path), f"{where}.video", f"file not found: {v_path}"))
            else:
                try:
                    read_video(v_path, num_frames)  # decodes: catches corrupt frames too
                except DataError as exc:
                    problems.append(exc.problem)
                except (ValueError, OSError, MemoryError) as exc:
                    problems.append(Problem(str(v_path), "video", f"unreadable ({exc})"))
    return problems
