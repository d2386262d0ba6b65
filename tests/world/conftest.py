"""Fixtures for the world tests: a tiny generated world, built once per session."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 12-clip world generated once per session (two worker processes)."""
    from evspec.data.world.generate import generate_world

    out = tmp_path_factory.mktemp("world") / "w"
    generate_world(out, 12, seed=7, workers=2, progress=False)
    return out
