"""The ``evspec`` command: a table of typed verbs (each is also a Python function).

Each verb group lives in its own module exposing ``register(app)``.  Input errors from any
verb end as one ``error: ...`` line and a non-zero exit (``evspec.cli.errors``).
"""

from __future__ import annotations

import importlib
import warnings

import typer

from evspec.cli.errors import ErrorGroup

app = typer.Typer(
    name="evspec",
    cls=ErrorGroup,
    help="Lossless speculative decoding for Video-LLaVA with event-camera drafters.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# Verb modules, in help order.  Each defines ``register(app: typer.Typer) -> None``.
_VERB_MODULES = (
    "evspec.cli.generate",
    "evspec.cli.demo",
    "evspec.cli.data",
    "evspec.cli.world",
    "evspec.cli.bench",
    "evspec.cli.heads",
)

for _name in _VERB_MODULES:
    try:
        _mod = importlib.import_module(_name)
    except ModuleNotFoundError as exc:  # a verb group not built yet
        if exc.name != _name:
            raise
        continue
    _mod.register(app)


def _format_warning(message: Warning | str, *args: object, **kwargs: object) -> str:
    return f"warning: {message}\n"


def main() -> None:
    """The ``evspec`` console script: warnings as ``warning: ...`` lines, then the app."""
    warnings.formatwarning = _format_warning
    app()
