"""Markdown tables for the reports (one helper, so every table renders alike)."""

from __future__ import annotations


def md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    """``header`` and ``rows`` (strings) as markdown lines, ending with a blank line."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return lines + [""]
