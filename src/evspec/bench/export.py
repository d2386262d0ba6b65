"""Records of a benchmark run as one CSV table (``evspec report --csv``), for spreadsheets
and pandas: one row per record (the latest per key), one column per field.

Scalar fields are columns as they are; ``timings`` becomes one ``timings.NAME`` column per
stage; ``rounds`` becomes ``n_rounds``; other lists (tokens, accepted_hist, per-position
counts) are written as JSON text in their column.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from evspec.data.atomic import atomic_file


def flatten_record(record: dict[str, Any]) -> dict[str, Any]:
    """One record -> a flat row."""
    row: dict[str, Any] = {}
    for key, value in record.items():
        if key == "timings" and isinstance(value, dict):
            row.update({f"timings.{k}": v for k, v in value.items()})
        elif key == "rounds" and isinstance(value, list):
            row["n_rounds"] = len(value)
        elif isinstance(value, (list, dict)):
            row[key] = json.dumps(value, separators=(",", ":"))
        else:
            row[key] = value
    return row


def write_records_csv(records: list[dict[str, Any]], path: str | Path) -> Path:
    """Write ``records`` to ``path`` (columns in first-seen order; a missing field is empty)."""
    rows = [flatten_record(r) for r in records]
    columns: dict[str, None] = {}
    for row in rows:
        columns.update(dict.fromkeys(row))
    path = Path(path)
    with atomic_file(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(columns), restval="")
        writer.writeheader()
        writer.writerows(rows)
    return path
