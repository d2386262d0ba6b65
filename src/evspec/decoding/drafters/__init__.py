"""Draft strategies, one class per file, chosen by name (DESIGN.md §4)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from evspec.decoding.drafters.base import DrafterError
from evspec.decoding.drafters.model import ModelDrafter
from evspec.decoding.drafters.prompt_lookup import PromptLookupDrafter
from evspec.decoding.protocols import Drafter, Target

from evspec.decoding.names import DRAFTER_NAMES  # one list, importable without torch

#: trained modules shipped with the world checkpoints: drafter name -> folder
SHIPPED_MODULES = Path(__file__).resolve().parents[2] / "assets" / "world" / "heads"


def shipped_modules() -> Path:
    """Where the shipped trained modules are: ``$EVSPEC_ASSETS/world/heads`` when that variable
    names another assets folder (as for the world checkpoints, see :mod:`evspec.demo`), else
    the package's own."""
    other = os.environ.get("EVSPEC_ASSETS")
    return Path(other) / "world" / "heads" if other else SHIPPED_MODULES

#: ``head_path`` value for a randomly initialised head of the right shapes: its drafts are
#: noise, so it is for acceptance-controlled timing only (the bench enforces that)
UNTRAINED = "untrained"

#: drafters that load a trained module, and the option that names its checkpoint folder
_TRAINED = {
    "eventgpt-adapter": "adapter_path",
    "eventgpt-lora": "lora_path",
    "event-head": "head_path",
    "target-head": "head_path",
}


def checkpoint_option(name: str) -> str:
    """The ``make_drafter`` option naming the checkpoint folder of drafter ``name``
    (``event-head@seed1`` -> ``head_path``); ``ValueError`` for drafters without one."""
    base = name.partition("@")[0]
    if base not in _TRAINED:
        raise ValueError(f"drafter {name!r} loads no trained module; checkpoints go with "
                         f"{', '.join(_TRAINED)}")
    return _TRAINED[base]


def _checkpoint(base: str, options: dict[str, Any]) -> Path | str:
    key = _TRAINED[base]
    path = options.pop(key, None)
    if path == UNTRAINED:
        if base not in ("event-head", "target-head"):
            raise DrafterError(f"{key}={UNTRAINED!r} builds a random draft head; drafter {base!r} needs a "
                               "trained checkpoint")
        return UNTRAINED
    if path is None:
        shipped = shipped_modules() / base
        if (shipped / "config.json").is_file():
            return shipped
        raise DrafterError(
            f"drafter {base!r} needs a trained checkpoint: pass {key}=FOLDER (train one with "
            f"`evspec collect` + `evspec train`); none is shipped at {shipped}"
        )
    return Path(path)


def make_drafter(
    name: str, *, target: Target, draft_model: Target | None = None, **options: Any
) -> Drafter | None:
    """Build the drafter called ``name`` (``None`` for the target-only baseline).

    ``eventgpt`` needs ``draft_model`` (an :class:`evspec.models.eventgpt.EventGPT`);
    ``self`` drafts with the target itself (a correctness check: everything is accepted).
    Trained drafters take their checkpoint folder as an option, defaulting to the module
    shipped with the world checkpoints (``assets/world/heads/<name>``, or
    ``$EVSPEC_ASSETS/world/heads/<name>``):
    ``eventgpt-adapter`` (``adapter_path``, needs ``draft_model``), ``eventgpt-lora``
    (``lora_path``, needs ``draft_model``; ``copy_model=False`` merges in place),
    ``event-head`` (``head_path``, needs ``draft_model`` for its event memory),
    ``target-head`` (``head_path``).

    ``name`` may carry a label after ``@`` (``event-head@seed1``): the part before picks
    the drafter, the whole name is reported (several checkpoints in one benchmark).
    """
    base, _, label = name.partition("@")
    if label and (not label.strip() or "|" in label):
        raise DrafterError(f"drafter label in {name!r} must be non-empty and without '|'")
    options = dict(options)
    if base == "none":
        return None
    if base in ("eventgpt", "eventgpt-adapter", "eventgpt-lora") and draft_model is None:
        raise DrafterError(f"drafter {base!r} needs a draft model (--draft-model PATH|PRESET)")
    if base == "eventgpt":
        drafter = ModelDrafter(draft_model, name=name, **options)
        drafter.check_compatible(target)  # vocabularies must agree: fail before any work
        return drafter
    if base == "self":
        return ModelDrafter(target, name=name, **options)
    if base == "prompt-lookup":
        return PromptLookupDrafter(**options)
    if base == "eventgpt-adapter":
        from evspec.decoding.drafters.adapter import make_adapter_drafter

        path = _checkpoint(base, options)
        return make_adapter_drafter(target, draft_model, path, name=name, **options)
    if base == "eventgpt-lora":
        from evspec.decoding.drafters.lora import make_lora_drafter

        path = _checkpoint(base, options)
        return make_lora_drafter(target, draft_model, path, name=name, **options)
    if base in ("event-head", "target-head"):
        from evspec.decoding.drafters.head import make_head_drafter

        path = _checkpoint(base, options)
        if base == "event-head" and draft_model is None:
            raise DrafterError("drafter 'event-head' needs a draft model for its event memory (--draft-model)")
        return make_head_drafter(base, target, draft_model, path, label=name, **options)
    if base == "event-router":  # router.py: event-head or target-head by question type
        from evspec.decoding.router import make_event_router

        if draft_model is None:
            raise DrafterError("drafter 'event-router' needs a draft model for the event-head "
                               "(--draft-model)")
        return make_event_router(target, draft_model, name=name, **options)
    if base == "cascade":  # note §6.2: options inner=NAME, inner_model, inner_gamma (drafters/cascade.py)
        from evspec.decoding.drafters.cascade import make_cascade_drafter

        if draft_model is None:
            raise DrafterError("drafter 'cascade' needs a draft model: its middle level (--draft-model)")
        return make_cascade_drafter(target, draft_model, name=name, **options)
    raise DrafterError(f"unknown drafter {base!r}; choose one of {', '.join(DRAFTER_NAMES)}")


__all__ = ["DRAFTER_NAMES", "DrafterError", "ModelDrafter", "PromptLookupDrafter", "make_drafter"]
