"""Fixtures for the engine tests (test doubles live in engine_doubles.py)."""

from __future__ import annotations

import pytest

from evspec.models.request import Request


@pytest.fixture
def request_factory():
    def make(question: str = "what moves?") -> Request:
        return Request(question=question)

    return make
