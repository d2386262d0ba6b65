"""Loading weights, training state and JSON from files that may be corrupt or hostile.

Nothing here executes code from a file: tensors come from safetensors (a header and raw
bytes) or from ``torch.load(weights_only=True)``, whose unpickler builds only tensors and
plain containers and refuses any other global *before* it is looked up.  Every failure is a
``ValueError`` whose message reads ``FILE: what is wrong: how to fix it``.
"""

from __future__ import annotations

import json
import pickle
import re
from pathlib import Path
from typing import Any

import torch


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_GLOBAL = re.compile(r"Unsupported global: GLOBAL (\S+)")


def _first_line(exc: BaseException) -> str:
    text = _ANSI.sub("", str(exc)).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def load_torch_state(path: str | Path, fix: str) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU; ``fix`` says how to recover."""
    path = Path(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError,
            AttributeError, TypeError) as exc:
        named = _GLOBAL.search(str(exc))
        reason = (f"it names {named.group(1)}, which is neither a tensor nor plain data; refused, "
                  "not run" if named else _first_line(exc))
        raise ValueError(f"{path}: not a file of tensors evspec can load safely ({reason}): {fix}"
                         ) from None


def _safetensors_error() -> tuple[type[BaseException], ...]:
    try:
        from safetensors import SafetensorError
    except ImportError:  # older safetensors
        return (OSError, ValueError, RuntimeError)
    return (SafetensorError, OSError, ValueError, RuntimeError)


def check_safetensors(path: str | Path, fix: str) -> None:
    """Read only the header of ``path``: a torn, truncated or foreign file raises ValueError.

    The safetensors reader checks that the header's tensor offsets cover the file exactly,
    so a cut-off file fails here, before any model is built.
    """
    from safetensors import safe_open

    try:
        with safe_open(str(path), "pt") as fh:
            fh.keys()
    except _safetensors_error() as exc:
        reason = f"not a readable safetensors file ({_first_line(exc)})"
        raise ValueError(f"{path}: {reason}: {fix}") from None


def load_safetensors(path: str | Path, fix: str) -> dict[str, torch.Tensor]:
    """All tensors of ``path`` on the CPU, or a ValueError naming the file."""
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except _safetensors_error() as exc:
        reason = f"not a readable safetensors file ({_first_line(exc)})"
        raise ValueError(f"{path}: {reason}: {fix}") from None


def read_json_object(path: str | Path, fix: str) -> dict[str, Any]:
    """A JSON file whose top level must be an object; errors name the file."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: missing: {fix}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: not valid JSON ({exc}): {fix}") from None
    except OSError as exc:
        raise ValueError(f"{path}: unreadable ({exc.strerror or exc}): {fix}") from None
    if not isinstance(raw, dict):
        raise ValueError(
            f"{path}: the top level is a JSON {type(raw).__name__}, expected an object: {fix}"
        )
    return raw
