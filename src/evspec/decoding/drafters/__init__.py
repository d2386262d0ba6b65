"""Draft strategies, one class per file, chosen by name (DESIGN.md §4)."""

from __future__ import annotations

from typing import Any

from evspec.decoding.drafters.base import DrafterError
from evspec.decoding.drafters.model import ModelDrafter
from evspec.decoding.drafters.prompt_lookup import PromptLookupDrafter
from evspec.decoding.protocols import Drafter, Target

from evspec.decoding.names import DRAFTER_NAMES


def make_drafter(
    name: str, *, target: Target, draft_model: Target | None = None, **options: Any
) -> Drafter | None:
    """Build the drafter called ``name`` (``None`` for the target-only baseline).

    ``eventgpt`` needs ``draft_model`` (an :class:`evspec.models.eventgpt.EventGPT`);
    ``self`` drafts with the target itself (a correctness check: everything is accepted).
    """
    if name == "none":
        return None
    if name == "eventgpt":
        if draft_model is None:
            raise DrafterError("drafter 'eventgpt' needs a draft model (--draft-model PATH|PRESET)")
        return ModelDrafter(draft_model, name="eventgpt", **options)
    if name == "self":
        return ModelDrafter(target, name="self", **options)
    if name == "prompt-lookup":
        return PromptLookupDrafter(**options)
    raise DrafterError(f"unknown drafter {name!r}; choose one of {', '.join(DRAFTER_NAMES)}")


__all__ = ["DRAFTER_NAMES", "DrafterError", "ModelDrafter", "PromptLookupDrafter", "make_drafter"]
