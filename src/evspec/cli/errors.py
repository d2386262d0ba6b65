"""The CLI's one error path: every failure of a bad input ends as one line

    error: FILE: what is wrong: how to fix it

on stderr and a non-zero exit status, never a traceback.  Verbs raise (``DataError``,
``ValueError``, ``OSError``, ...); :class:`ErrorGroup`, the top-level command group, turns
what escapes them into that line.  ``EVSPEC_TRACEBACK=1`` shows the traceback instead
(for bug reports).
"""

from __future__ import annotations

import os
from typing import Any, NoReturn

import click
import typer
from typer.core import TyperGroup

EXIT_INPUT = 1  # bad input, busy run folder, ...: the message says what to change

# What a bad file, option or folder raises; anything else is a bug and keeps its traceback.
# (json.JSONDecodeError, DataError, ManifestError and MergeError are ValueErrors; PermissionError,
# FileNotFoundError, IsADirectoryError are OSErrors.)
INPUT_ERRORS: tuple[type[BaseException], ...] = (ValueError, OSError, MemoryError, RecursionError)


def describe(exc: BaseException) -> str:
    """The message of an input error, naming the file where the exception knows it."""
    if isinstance(exc, OSError) and exc.filename is not None and exc.strerror:
        hint = {
            "IsADirectoryError": "give a file, not a folder",
            "NotADirectoryError": "give a folder, not a file",
            "FileExistsError": "choose another path or remove it",
            "PermissionError": "check the file's permissions",
            "FileNotFoundError": "check the path",
        }.get(type(exc).__name__, "check the path")
        return f"{exc.filename}: {exc.strerror.lower()}: {hint}"
    if isinstance(exc, MemoryError):
        return f"out of memory ({exc or 'an input asks for more than this machine has'})"
    if isinstance(exc, RecursionError):
        return "an input is nested too deeply to process"
    text = str(exc).strip()
    return text or type(exc).__name__


def fail(message: str, code: int = EXIT_INPUT) -> NoReturn:
    """Print ``error: MESSAGE`` on stderr and exit with ``code``."""
    message = message.strip()
    typer.echo(message if message.startswith("error: ") else f"error: {message}", err=True)
    raise typer.Exit(code=code)


class ErrorGroup(TyperGroup):
    """The top-level group: input errors raised by any verb become one ``error:`` line."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.ClickException, click.exceptions.Abort):
            raise
        except INPUT_ERRORS as exc:
            if os.environ.get("EVSPEC_TRACEBACK"):
                raise
            fail(describe(exc))
