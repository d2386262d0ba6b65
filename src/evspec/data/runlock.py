"""One writer per run folder: an exclusive, advisory lock held while a verb writes there.

``bench``, ``collect``, ``train``, ``world train``, ``data dsec`` and ``merge`` resume from
what their folder already holds; two processes on one folder would redo each other's work
and interleave their records.  :func:`run_lock` takes ``flock(LOCK_EX)`` on ``FOLDER/.lock``
and writes who holds it (verb, pid, host, start time) into that file, so a second process
is refused at once with a message naming the first.  The kernel drops the lock when its
holder exits, however it exits (``kill -9`` included), so a lock is never stale.  Re-entering
the same folder from the holding process is allowed (nested calls share the lock).
"""

from __future__ import annotations

import datetime as _dt
import functools
import inspect
import json
import os
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

try:
    import fcntl
except ImportError:  # not POSIX: no locking (documented in docs/security.md)
    fcntl = None  # type: ignore[assignment]

LOCK_FILE = ".lock"
F = TypeVar("F", bound=Callable[..., Any])

_held: dict[Path, int] = {}  # lock file -> nesting depth, in this process


class FolderInUse(OSError):
    """Another live process holds the run folder's lock; the message names it."""


def _holder(path: Path) -> str:
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
        return (f"`evspec {info['verb']}` (pid {info['pid']} on {info['host']}, since "
                f"{info['started']})")
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"


def check_folder_path(folder: Path, option: str = "--out") -> None:
    """Refuse a path that exists but is not a folder, before anything is loaded."""
    if folder.exists() and not folder.is_dir():
        raise NotADirectoryError(
            f"{option} {folder}: is a file, not a run folder: give a folder path (it is created)"
        )


@contextmanager
def run_lock(
    folder: str | Path, verb: str, option: str = "--out", name: str = LOCK_FILE
) -> Iterator[Path]:
    """Hold ``folder``'s lock for the block (creating the folder); raise :class:`FolderInUse`
    naming the holder when another process has it.  ``name``: the lock file, for writers
    that share a folder by parts (each ``collect`` shard locks its own)."""
    folder = Path(folder)
    check_folder_path(folder, option)
    folder.mkdir(parents=True, exist_ok=True)
    key = folder.resolve() / name
    if key in _held or fcntl is None:
        _held[key] = _held.get(key, 0) + 1
        try:
            yield folder
        finally:
            _held[key] -= 1
            if not _held[key]:
                del _held[key]
        return
    path = folder / name
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise FolderInUse(
                f"{folder}: in use by {_holder(path)}: wait for it to finish (or stop it), or "
                f"use another {option}"
            ) from None
        info = {"verb": verb, "pid": os.getpid(), "host": socket.gethostname(),
                "started": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(info) + "\n").encode("utf-8"), 0)
        _held[key] = 1
        try:
            yield folder
        finally:
            del _held[key]
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def holds_run_lock(
    verb: str, where: Callable[[dict[str, Any]], Path | tuple[Path, str]]
) -> Callable[[F], F]:
    """Decorate a writer so that it runs under :func:`run_lock`.  ``where`` maps the call's
    arguments (by parameter name, defaults applied) to the folder, or (folder, lock name)."""

    def wrap(fn: F) -> F:
        signature = inspect.signature(fn)

        @functools.wraps(fn)
        def locked(*args: Any, **kwargs: Any) -> Any:
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            spot = where(bound.arguments)
            folder, name = spot if isinstance(spot, tuple) else (spot, LOCK_FILE)
            with run_lock(folder, verb, name=name):
                return fn(*args, **kwargs)

        return locked  # type: ignore[return-value]

    return wrap
