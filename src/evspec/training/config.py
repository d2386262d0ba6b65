"""What every training config shares: reading a run's ``train_config.json`` back (torch-free,
so the CLI validates a config before torch is imported)."""

from __future__ import annotations

from dataclasses import fields
from typing import Any


def config_keys(cls: type, d: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``d`` (a run's ``train_config.json``) after refusing keys that are not
    fields of the config dataclass ``cls``."""
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise ValueError(f"{cls.__name__}: unknown key(s) {unknown}; known: {sorted(known)}")
    return dict(d)
