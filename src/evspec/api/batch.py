"""Batch answers: every question of a manifest through a :class:`~evspec.Pipeline`, one JSON
line per question, resumable.

Each record is what ``evspec generate --json`` prints (``tokens``, ``text``, ``stats``) plus
where the question came from: ``clip_id``, ``index`` (the question's position in its clip),
``question``, ``qtype`` and the manifest's ``reference`` answer.  A run appends to the output
file and skips the (clip, index) pairs already there, so an interrupted run picks up where
it stopped; a half-written last line (a crash mid-write) is dropped first.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from evspec.api.pipeline import Pipeline


@dataclass
class BatchSummary:
    """What :func:`answer_manifest` did."""

    answered: int
    skipped: int  # already in the output file
    total: int
    out: Path


def _done_keys(out: Path) -> set[tuple[str, int]]:
    """The (clip_id, index) pairs already answered in ``out``.  Records end with a newline,
    so text after the last newline is a torn write: it is cut off (that question is
    answered again)."""
    if not out.exists():
        return set()
    raw = out.read_bytes()
    whole = raw[: raw.rfind(b"\n") + 1]
    if len(whole) < len(raw):
        with open(out, "r+b") as fh:
            fh.truncate(len(whole))
    done: set[tuple[str, int]] = set()
    for n, line in enumerate(whole.splitlines(), 1):
        try:
            rec = json.loads(line)
            done.add((str(rec["clip_id"]), int(rec["index"])))
        except (ValueError, KeyError, TypeError):
            raise ValueError(f"{out}: line {n} is not an answer record; choose another --out "
                             "or remove the file") from None
    return done


def answer_manifest(
    pipe: Pipeline,
    manifest: str | os.PathLike,
    out: str | os.PathLike,
    *,
    split: str | None = None,
    resume: bool = True,
    on_record: Callable[[dict[str, Any]], None] | None = None,
    **decode: Any,
) -> BatchSummary:
    """Answer every question of ``manifest`` (the clips of ``split`` when given) into the JSON
    Lines file ``out``.  ``resume=False`` refuses an existing ``out`` instead of continuing it.
    ``decode`` as in :meth:`Pipeline.__call__`; ``on_record`` sees each new record."""
    from evspec.data.loading import load_clip_inputs
    from evspec.data.manifest import SPLITS, load_manifest

    if split is not None and split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    m = load_manifest(manifest)
    clips = [c for c in m.clips if split is None or c.split == split]
    out = Path(out)
    if out.exists() and not resume:
        raise FileExistsError(f"{out} exists; resume it (--resume) or choose another --out")
    done = _done_keys(out) if resume else set()
    out.parent.mkdir(parents=True, exist_ok=True)
    total = sum(len(c.questions) for c in clips)
    answered = skipped = 0
    sizes = pipe.sizes
    with open(out, "a", encoding="utf-8") as fh:
        for clip in clips:
            todo = [(i, qa) for i, qa in enumerate(clip.questions) if (clip.id, i) not in done]
            skipped += len(clip.questions) - len(todo)
            if not todo:
                continue
            video, events = load_clip_inputs(
                clip, m.root, n_event_images=sizes.n_event_images, num_frames=sizes.num_frames,
                canvas="sensor" if sizes.world else "chunk", warn_window=not sizes.world,
            )
            if video is None:
                raise ValueError(f"{manifest}: clip {clip.id!r} has no video; the target needs one")
            for i, qa in todo:
                result = pipe(video=video, events=events, question=qa.question, **decode)
                record = {"clip_id": clip.id, "index": i, "question": qa.question,
                          "qtype": qa.qtype, "reference": qa.answer, **result.to_dict(),
                          "numerics": pipe.target.numerics}
                fh.write(json.dumps(record) + "\n")
                fh.flush()
                answered += 1
                if on_record is not None:
                    on_record(record)
    return BatchSummary(answered=answered, skipped=skipped, total=total, out=out)
