"""Paths of the shipped world assets the API tests use."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
WORLD = ROOT / "src" / "evspec" / "assets" / "world"
CLIP = WORLD / "clips" / "world-000018"
VIDEO, EVENTS = str(CLIP / "frames"), str(CLIP / "events.npz")
HAVE_WORLD = (WORLD / "heads" / "event-head" / "config.json").is_file()
