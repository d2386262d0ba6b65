"""``eventgpt-lora``: EventGPT distilled toward the target with LoRA (``evspec train
--module lora``), merged into a copy of the draft model and decoded like ``eventgpt``
(:class:`ModelDrafter`, re-synchronised every round)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from evspec.decoding.drafters.base import DrafterError
from evspec.decoding.drafters.model import ModelDrafter


def make_lora_drafter(
    target: Any,
    draft_model: Any,
    lora_path: str | Path,
    *,
    name: str = "eventgpt-lora",
    copy_model: bool = True,
    top_p: float = 1.0,
) -> ModelDrafter:
    """Load the LoRA checkpoint at ``lora_path`` into (a copy of) ``draft_model``.

    ``copy_model=False`` merges into ``draft_model`` itself (saves memory at 7B, but the
    naive ``eventgpt`` drafter then uses the distilled weights too).
    """
    from evspec.modules.checkpoint import load_checkpoint
    from evspec.modules.lora import LoraSpec, distilled_eventgpt

    ckpt = load_checkpoint(lora_path)
    if ckpt.kind != "lora":
        raise DrafterError(f"{lora_path}: a {ckpt.kind} checkpoint, not LoRA adapters for EventGPT")
    try:
        ckpt.check_target(target.lm_head.weight)
    except ValueError as exc:
        raise DrafterError(str(exc)) from exc
    dims = ckpt.meta.get("dims", {})
    width = int(draft_model.lm_head.weight.shape[1])
    if dims and int(dims.get("draft_hidden", width)) != width:
        raise DrafterError(f"{lora_path}: trained on an EventGPT of width {dims.get('draft_hidden')}, "
                           f"the draft model has {width}")
    try:
        model = distilled_eventgpt(draft_model, LoraSpec.from_dict(ckpt.config), ckpt.state, copy_model=copy_model)
    except ValueError as exc:
        raise DrafterError(f"{lora_path}: {exc}") from exc
    return ModelDrafter(model, name=name, top_p=top_p)
