"""Shared fixtures: the shipped world models in one Pipeline (loaded once per session)."""

from __future__ import annotations

import pytest

from api_paths import HAVE_WORLD  # a sibling helper (tests/api is on sys.path)


@pytest.fixture(scope="session")
def world_pipe():
    if not HAVE_WORLD:
        pytest.skip("world assets not shipped")
    import evspec

    return evspec.Pipeline.from_pretrained("world", drafter="event-head", gamma=4,
                                           max_new_tokens=24, device="cpu")
