"""Append-only JSONL records of a benchmark run, safe against kills.

A run folder holds ``records.jsonl``: one JSON object per line, one line per finished
(request, drafter, γ) run, written with a single ``write`` on an ``O_APPEND`` descriptor and
``fsync``-ed before the harness moves on.  A kill can therefore only leave a *partial last
line*; :meth:`RecordLog.open` detects it and cuts it off, so the run resumes exactly after
the last complete record: nothing lost, nothing duplicated.  Whole-file metadata
(``run.json``) is replaced atomically with :func:`write_json_atomic`.

Every record has a ``key`` (``request_id|drafter|gamma``).  Readers keep the *last* record
per key, so a deliberate retry of a failed run supersedes the failure instead of
duplicating it.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from evspec.data.atomic import atomic_write_text

RECORDS_FILE = "records.jsonl"
RUN_FILE = "run.json"


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


def _scan(path: Path) -> tuple[list[dict], int, bool]:
    """Parse ``path``: (records, byte length of the complete lines, whether a tail was torn).

    Only the last line may be incomplete (bytes after the last newline: a record is written
    with its newline in one call, so a torn write never ends in one); a broken complete line
    is an error naming the line.
    """
    data = path.read_bytes()
    records: list[dict] = []
    good_end = 0
    lines = data.split(b"\n")
    # ``lines[-1]`` is what follows the last newline: empty for a clean file.
    for i, raw in enumerate(lines[:-1]):
        if not raw.strip():
            good_end += len(raw) + 1
            continue
        try:
            rec = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}:{i + 1}: corrupt record ({exc}); fix or delete that line") from exc
        if not isinstance(rec, dict) or "key" not in rec:
            raise ValueError(f"{path}:{i + 1}: a record must be a JSON object with a 'key'")
        records.append(rec)
        good_end += len(raw) + 1
    return records, good_end, bool(lines[-1])


def read_records(path: Path, *, latest_only: bool = True) -> list[dict]:
    """All complete records of ``path`` (a run folder or a ``records.jsonl``).

    With ``latest_only`` keep only the last record per key, in first-seen key order.  A torn
    last line (from a kill) is ignored, not repaired: use :meth:`RecordLog.open` to repair.
    """
    path = Path(path)
    if path.is_dir():
        path = path / RECORDS_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path}: no records (run `evspec bench ... --out {path.parent}` first)")
    records, _, _ = _scan(path)
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
    def open(cls, run_dir: Path) -> RecordLog:
        """Open (creating) ``run_dir/records.jsonl``, cutting off a torn last line."""
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        path = run_dir / RECORDS_FILE
        records: list[dict] = []
        repaired = 0
        if path.exists():
            records, good_end, torn = _scan(path)
            if torn:
                repaired = path.stat().st_size - good_end
                os.truncate(path, good_end)
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
        line = json.dumps(_clean(record), allow_nan=False, separators=(",", ":")) + "\n"
        data = line.encode("utf-8")
        written = os.write(self._fd, data)
        while written < len(data):  # a short write to a regular file is rare but legal
            written += os.write(self._fd, data[written:])
        os.fsync(self._fd)
        self._latest[record["key"]] = record
