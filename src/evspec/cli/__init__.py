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
    "evspec.cli.serve",
    "evspec.cli.demo",
    "evspec.cli.data",
    "evspec.cli.world",
    "evspec.cli.bench",
    "evspec.cli.heads",
)

def _warning_line(message, category, filename, lineno, line=None) -> str:
    """Warnings as one line, ``warning: Category: message`` (no source file or code)."""
    return f"warning: {category.__name__}: {message}\n"


@app.callback()
def _root(
    no_progress: bool = typer.Option(
        False, "--no-progress", "--quiet", "-Q",
        help="No progress bars in any verb (bars are drawn only on a terminal anyway)."),
) -> None:
    """Lossless speculative decoding for Video-LLaVA with event-camera drafters."""
    import os

    from evspec.progress import NO_PROGRESS_ENV

    warnings.formatwarning = _warning_line
    # transformers' own bars ("Loading weights"): read by huggingface_hub when it is imported
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    # on <= 2 cores, one OpenMP thread: two contend with each other (and the OS) and slow
    # the small models' narrow matrix products down many times; read when torch starts
    if (os.cpu_count() or 1) <= 2:
        os.environ.setdefault("OMP_NUM_THREADS", "1")
    if no_progress:
        os.environ[NO_PROGRESS_ENV] = "1"


for _name in _VERB_MODULES:
    try:
        _mod = importlib.import_module(_name)
    except ModuleNotFoundError as exc:  # a verb group not built yet
        if exc.name != _name:
            raise
        continue
    _mod.register(app)


def main() -> None:
    """The ``evspec`` console script: warnings as ``warning: ...`` lines, then the app."""
    warnings.formatwarning = _warning_line
    app()
