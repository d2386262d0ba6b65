"""Import the research's ``EventGPT_Instruction_Subset.json`` into an evspec manifest.

The research layout (a dataset folder ``DIR``)::

    DIR/EventGPT_Instruction_Subset.json   a list of records:
        {"id": "uuid", "split": "my_egpt_dsec_seq_1s",
         "event_data": "seq/000000.npy",           -> DIR/event_npy/seq/000000.npy
         "video_data": "seq/000000",               -> DIR/video/seq/000000/  (PNG frames)
         "mp4_data": "seq/000000.mp4",             -> DIR/mp4/seq/000000.mp4
         "event_image": ["seq/000000_0.png", ...], -> DIR/event_image/...     (5 pre-rendered)
         "event_image_1f": ["seq/000000_0.png"],   -> DIR/event_image_1f/...  (1 pre-rendered)
         "conversations": [{"from": "human", "value": "<event>\\nQ"},
                           {"from": "gpt", "value": "A"}, ...]}

Each path is looked up under its field's sub-folder first, then directly under ``DIR``.
Every (human, gpt) pair becomes a ``QA`` (answer ``None`` when empty; pairs with an empty
question are dropped).  ``event_image`` / ``event_image_1f`` are not imported: evspec
renders event images from the events itself (the research's pre-rendered images came
from a vectorised renderer that is not last-event-wins).  The record's ``split`` is the
research dataset's name, not a train/test split; the split is chosen on import.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from evspec.data.errors import Problem
from evspec.data.manifest import SPLITS, ClipEntry, Manifest, ManifestError, QA, save_manifest

_SUBDIR = {"event_data": "event_npy", "video_data": "video", "mp4_data": "mp4"}
_PLACEHOLDER = re.compile(r"<(?:event|image|video)>")


_SAFE_ID = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,199}")


def _resolve(root: Path, field: str, rel: str) -> Path:
    first = root / _SUBDIR[field] / rel
    if first.exists():
        return first
    second = root / rel
    return second if second.exists() else first


def _inside(root: Path, path: Path) -> bool:
    """Whether ``path`` (links followed) lies inside ``root``."""
    try:
        path.resolve().relative_to(root.resolve())
    except ValueError:
        return False
    return True


def clean_question(text: str) -> str:
    """Drop the modality placeholder (``<event>``, ``<image>``, ``<video>``) and whitespace."""
    return _PLACEHOLDER.sub("", text).strip()


def _qas(conv: object, where: str, file: str, problems: list[Problem]) -> list[QA]:
    if not isinstance(conv, list):
        problems.append(Problem(file, f"{where}.conversations", "must be a list of turns"))
        return []
    out: list[QA] = []
    pending: str | None = None
    for j, turn in enumerate(conv):
        if not isinstance(turn, dict) or not isinstance(turn.get("value"), str):
            problems.append(Problem(file, f"{where}.conversations[{j}]",
                                    "must be {\"from\": ..., \"value\": string}"))
            continue
        who, value = turn.get("from"), turn["value"]
        if who == "human":
            pending = clean_question(value)
        elif who == "gpt":
            if pending:
                out.append(QA(pending, value.strip() or None))
            pending = None
        else:
            problems.append(Problem(file, f"{where}.conversations[{j}].from",
                                    f"is {who!r}, expected 'human' or 'gpt'"))
    if pending:
        out.append(QA(pending, None))
    return out


def import_eventgpt(
    json_path: str | Path,
    root: str | Path,
    out: str | Path,
    *,
    split: str = "train",
    video: str = "mp4",
) -> Manifest:
    """Convert the research JSON into a manifest written at ``out``; returns it.

    ``video="mp4"`` prefers ``mp4_data`` (falling back to ``video_data``), ``"frames"``
    the reverse.  Structural problems in the JSON are all reported together in one
    ``ManifestError``: paths leading outside ``root``, ids that are not file-name safe, and
    missing event files among them; videos are checked by ``evspec data check``.
    """
    if split not in SPLITS:
        raise ValueError(f"import_eventgpt: split must be one of {list(SPLITS)}, got {split!r}")
    if video not in ("mp4", "frames"):
        raise ValueError(f"import_eventgpt: video must be 'mp4' or 'frames', got {video!r}")
    json_path, root, out = Path(json_path), Path(root), Path(out)
    if out.is_dir():
        raise ValueError(f"--out {out}: is a folder; give the manifest file to write, e.g. "
                         f"{out / 'manifest.json'}")
    if not root.is_dir():
        raise ValueError(f"--root {root}: no such folder (the research dataset: event_npy/, "
                         "mp4/, ...)")
    file = str(json_path)
    try:
        records = json.loads(json_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ManifestError([Problem(file, "file", "does not exist")]) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ManifestError([Problem(file, "file", f"not valid JSON ({exc})")]) from None
    if not isinstance(records, list):
        raise ManifestError([Problem(file, "<top>", "must be a JSON list of records")])
    problems: list[Problem] = []
    clips: list[ClipEntry] = []
    seen: set[str] = set()
    out_root = out.parent
    order = ("mp4_data", "video_data") if video == "mp4" else ("video_data", "mp4_data")
    for i, rec in enumerate(records):
        where = f"[{i}]"
        if not isinstance(rec, dict):
            problems.append(Problem(file, where, "record must be an object"))
            continue
        paths: dict[str, str | None] = {}
        before = len(problems)
        for key in ("event_data", *order):
            value = rec.get(key)
            if value is None or value == "":
                paths[key] = None
            elif not isinstance(value, str):
                problems.append(Problem(file, f"{where}.{key}", "must be a path string"))
                paths[key] = None
            elif Path(value).is_absolute() or not _inside(root, _resolve(root, key, value)):
                problems.append(Problem(file, f"{where}.{key}", f"{value!r} leads outside --root "
                                        f"{root}; paths must stay inside the dataset folder"))
                paths[key] = None
            else:
                target = _resolve(root, key, value)
                if key == "event_data" and not target.is_file():
                    problems.append(Problem(file, f"{where}.{key}", f"{value!r}: no such events "
                                            f"file under {root} (looked in {target.parent})"))
                paths[key] = Path(os.path.relpath(target, out_root)).as_posix()
        cid = str(rec.get("id") or f"clip-{i:06d}")
        if not _SAFE_ID.fullmatch(cid):
            problems.append(Problem(
                file, f"{where}.id", f"{cid[:80]!r} is not a safe clip id (letters, digits, '.', "
                "'_', '-'; not starting with '.' or '-')"))
        if len(problems) > before:  # reported; its turns are still checked
            _qas(rec.get("conversations", []), where, file, problems)
            continue
        vid = paths[order[0]] or paths[order[1]]
        if paths["event_data"] is None and vid is None:
            problems.append(Problem(file, where, "has no event_data, mp4_data or video_data"))
            continue
        if cid in seen:
            cid = f"{cid}-{i}"
        seen.add(cid)
        clips.append(ClipEntry(cid, paths["event_data"], vid, None, split,
                               _qas(rec.get("conversations", []), where, file, problems)))
    if problems:
        raise ManifestError(problems)
    meta: dict[str, Any] = {
        "source": "EventGPT_Instruction_Subset",
        "json": str(json_path),
        "dataset_root": str(root),
        "video_preference": video,
    }
    manifest = Manifest(clips, out_root, meta)
    save_manifest(out, manifest)
    return manifest
