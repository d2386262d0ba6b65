"""Fixtures for the data-layer tests: generated fake recordings, never downloads."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import typer

from evspec.data.events import EventStream


def random_stream(
    n: int, width: int, height: int, seed: int = 0, t0: int = 0, span_us: int = 50_000,
    sensor: bool = True,
) -> EventStream:
    """n random events on a width x height sensor over [t0, t0 + span_us) (sorted, with ties)."""
    rng = np.random.default_rng(seed)
    return EventStream(
        x=rng.integers(0, width, n),
        y=rng.integers(0, height, n),
        t=np.sort(rng.integers(t0, t0 + span_us, n)),
        p=rng.integers(0, 2, n),
        sensor_size=(width, height) if sensor else None,
    )


@pytest.fixture
def make_stream() -> Callable[..., EventStream]:
    return random_stream


@pytest.fixture
def cli_app() -> typer.Typer:
    """A top-level app with only the ``data`` verbs registered (as ``evspec.cli`` does),
    so these tests do not import the model-side verb modules."""
    from evspec.cli.data import register

    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)

    @app.callback()
    def _root() -> None:  # keeps "data" a sub-command even with one group
        pass

    register(app)
    return app
