"""Append-only JSONL records of a benchmark run, safe against kills.

A run folder holds ``records.jsonl``: one JSON object per line, one line per finished
(request, drafter, γ) run, written with a single ``write`` on an ``O_APPEND`` descriptor and
``fsync``-ed before the harness moves on.  A kill can therefore only leave a *partial last
line*; :meth:`RecordLog.open` detects it and cuts it off, so the run resumes exactly after
the last complete record: nothing lost, nothing duplicated.  A complete line that is not a
record (disk damage, a hand edit) is moved to ``records.quarantine.jsonl`` with a warning
on open, and its measurement runs again.  Whole-file metadata
(``run.json``) is replaced atomically with :func:`write_json_atomic`.

Every record has a ``key`` (``request_id|drafter|gamma``).  Readers keep the *last* record
per key, so a deliberate retry of a failed run supersedes the failure instead of
duplicating it.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from evspec.data.atomic import atomic_file, atomic_write_text

RECORDS_FILE = "records.jsonl"
RUN_FILE = "run.json"
QUARANTINE_FILE = "records.quarantine.jsonl"


def record_key(request_id: str, drafter: str, gamma: int) -> str:
    """The resume key of one measurement."""
    if "|" in request_id or "|" in drafter:
        raise ValueError(f"request id {request_id!r} and drafter {drafter!r} must not contain '|'")
    return f"{request_id}|{drafter}|{gamma}"


def _clean(obj: Any) -> Any:
    """Make ``obj`` strict-JSON: NaN/inf become None (the JSON standard has no NaN)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_clean(v) for v in obj]
    return obj


def write_json_atomic(path: Path, data: Any) -> None:
    """Write ``data`` as JSON to ``path`` so readers see the old or the new file, never half."""
    atomic_write_text(path, json.dumps(_clean(data), indent=2, allow_nan=False) + "\n")


def read_json(path: Path) -> Any:
    """Read a JSON file, naming it in the error when it is not valid JSON."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from exc


# What a benchmark measurement record holds besides its key (``measure.base_record``).
BENCH_FIELDS = {"request_id": str, "drafter": str, "gamma": int}


class CorruptRecordWarning(UserWarning):
    """Complete lines of ``records.jsonl`` that are not records (skipped, or quarantined)."""


def _parse(raw: bytes, fields: dict[str, type]) -> tuple[dict | None, str | None]:
    """One complete line as (record, None), or (None, why it is not a record: one with a
    string ``key`` and ``fields``)."""
    try:
        rec = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        return None, f"not JSON ({exc})"
    if not isinstance(rec, dict):
        return None, f"a JSON {type(rec).__name__}, not an object"
    for name, kind in {"key": str, **fields}.items():
        if not isinstance(rec.get(name), kind) or isinstance(rec.get(name), bool):
            return None, f"no {name!r} ({kind.__name__})"
    return rec, None


def _scan(
    path: Path, fields: dict[str, type] | None = None
) -> tuple[list[dict], int, bool, list[tuple[int, bytes, str]]]:
    """Parse ``path``: (records, byte length of the complete lines, whether a tail was torn,
    the corrupt complete lines as (line number, bytes, reason)).

    Only the last line may be incomplete (bytes after the last newline: a record is written
    with its newline in one call, so a torn write never ends in one).  A complete line that
    is not a record (a disk error, a hand edit) is returned apart, not fatal.
    """
    data = path.read_bytes()
    records: list[dict] = []
    bad: list[tuple[int, bytes, str]] = []
    good_end = 0
    lines = data.split(b"\n")
    # ``lines[-1]`` is what follows the last newline: empty for a clean file.
    for i, raw in enumerate(lines[:-1]):
        good_end += len(raw) + 1
        if not raw.strip():
            continue
        rec, reason = _parse(raw, fields or {})
        if rec is not None:
            records.append(rec)
        else:
            bad.append((i + 1, raw, reason))
    return records, good_end, bool(lines[-1]), bad


def _fields_of(path: Path, fields: dict[str, type] | None) -> dict[str, type]:
    """``fields``, or by default what the records of ``path``'s folder must hold."""
    if fields is not None:
        return fields
    return BENCH_FIELDS if (path.parent / RUN_FILE).exists() else {}


class DuplicateRecordWarning(UserWarning):
    """A key recorded ``ok`` more than once (a retry of a failure is not a duplicate)."""


def _measured_twice(records: list[dict]) -> list[str]:
    seen: set[str] = set()
    twice: dict[str, None] = {}
    for rec in records:
        if rec.get("status") == "ok":
            if rec["key"] in seen:
                twice[rec["key"]] = None
            seen.add(rec["key"])
    return list(twice)


def _describe_bad(path: Path, bad: list[tuple[int, bytes, str]]) -> str:
    numbers = ", ".join(str(n) for n, _, _ in bad[:8]) + (" …" if len(bad) > 8 else "")
    first, _, reason = bad[0]
    return f"{path}: {len(bad)} corrupt record line(s) (lines {numbers}; line {first}: {reason})"


def read_records(
    path: Path, *, latest_only: bool = True, fields: dict[str, type] | None = None
) -> list[dict]:
    """All complete records of ``path`` (a run folder or a ``records.jsonl``).

    With ``latest_only`` keep only the last record per key, in first-seen key order.  A torn
    last line (from a kill) is ignored, not repaired: use :meth:`RecordLog.open` to repair.
    Corrupt complete lines (not a JSON object with a string ``key`` and ``fields``; by
    default :data:`BENCH_FIELDS` in a benchmark run folder, one with ``run.json``) are
    skipped with a :class:`CorruptRecordWarning`.
    """
    path = Path(path)
    if path.is_dir():
        path = path / RECORDS_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path}: no records (run `evspec bench ... --out {path.parent}` first)")
    records, _, _, bad = _scan(path, _fields_of(path, fields))
    if bad:
        warnings.warn(
            f"{_describe_bad(path, bad)} skipped; resuming `evspec bench` with the same --out "
            f"moves them to {QUARANTINE_FILE} and measures them again",
            CorruptRecordWarning, stacklevel=2,
        )
    twice = _measured_twice(records)
    if twice:
        warnings.warn(
            f"{path}: {len(twice)} measurement(s) recorded ok more than once (e.g. {twice[0]}): "
            "two processes wrote this folder, or it was resumed from a copy; the latest is kept",
            DuplicateRecordWarning, stacklevel=2,
        )
    if not latest_only:
        return records
    latest: dict[str, dict] = {}
    for rec in records:
        latest[rec["key"]] = rec
    order = list(dict.fromkeys(rec["key"] for rec in records))
    return [latest[k] for k in order]


class RecordLog:
    """The append-only writer of one run folder.  Use :meth:`open`, then :meth:`append`."""

    def __init__(self, path: Path, records: list[dict], repaired_bytes: int) -> None:
        self.path = path
        self.repaired_bytes = repaired_bytes  # bytes of a torn last line cut off on open
        self._latest: dict[str, dict] = {}
        for rec in records:
            self._latest[rec["key"]] = rec
        self._fd: int | None = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    @classmethod
    def open(cls, run_dir: Path, fields: dict[str, type] | None = None) -> RecordLog:
        """Open (creating) ``run_dir/records.jsonl``, cutting off a torn last line and moving
        corrupt lines (see :func:`read_records` for ``fields``) to the quarantine file."""
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        path = run_dir / RECORDS_FILE
        records: list[dict] = []
        repaired = 0
        if path.exists():
            records, good_end, torn, bad = _scan(path, _fields_of(path, fields))
            if torn:
                repaired = path.stat().st_size - good_end
                os.truncate(path, good_end)
            if bad:
                _quarantine(path, records, bad)
        return cls(path, records, repaired)

    def __enter__(self) -> RecordLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def get(self, key: str) -> dict | None:
        """The latest record for ``key``, or None."""
        return self._latest.get(key)

    def done(self, key: str, *, retry_failed: bool = False) -> bool:
        """Whether ``key`` needs no more work (ok, or failed unless retrying failures)."""
        rec = self._latest.get(key)
        if rec is None:
            return False
        return rec.get("status") == "ok" or not retry_failed

    def __len__(self) -> int:
        return len(self._latest)

    def __iter__(self) -> Iterator[dict]:
        return iter(self._latest.values())

    def append(self, record: dict) -> None:
        """Write one record durably: a single append of one full line, then fsync."""
        if self._fd is None:
            raise RuntimeError(f"{self.path}: record log is closed")
        if "key" not in record:
            raise ValueError("a record needs a 'key' (see record_key)")
        data = _line(record)
        written = os.write(self._fd, data)
        while written < len(data):  # a short write to a regular file is rare but legal
            written += os.write(self._fd, data[written:])
        os.fsync(self._fd)
        self._latest[record["key"]] = record


def _line(record: dict) -> bytes:
    """``record`` as one line of ``records.jsonl`` (compact JSON, no NaN, newline-ended)."""
    return (json.dumps(_clean(record), allow_nan=False, separators=(",", ":")) + "\n").encode()


def _quarantine(path: Path, records: list[dict], bad: list[tuple[int, bytes, str]]) -> None:
    """Move corrupt lines of ``path`` to ``QUARANTINE_FILE`` beside it (appended, kept for a
    post-mortem) and rewrite ``path`` with the records alone; their keys are then missing,
    so the resumed run measures them again."""
    aside = path.with_name(QUARANTINE_FILE)
    with open(aside, "ab") as f:
        f.write(b"".join(raw + b"\n" for _, raw, _ in bad))
        f.flush()
        os.fsync(f.fileno())
    with atomic_file(path) as tmp, open(tmp, "wb") as f:
        f.write(b"".join(_line(rec) for rec in records))
        f.flush()
        os.fsync(f.fileno())
    warnings.warn(f"{_describe_bad(path, bad)} moved to {aside}; they are measured again",
                  CorruptRecordWarning, stacklevel=3)
