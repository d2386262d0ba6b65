"""Load and save EventGPT in the official release layout (MODELS.md, "EventGPT").

A release folder holds ``config.json`` (``model_type: "EventChat_llama"``, the LLaMA keys,
``mm_visual_tower``, ``mm_hidden_size``, ``event_feature_adaptor`` (its *presence* builds
the adaptor, as in the release code), ``mm_use_im_start_end``, ``mm_use_im_patch_token``),
the weights (``model.safetensors``, ``model-0000i-of-0000N.safetensors`` +
``model.safetensors.index.json``, ``pytorch_model.bin`` or ``pytorch_model-*.bin`` +
``pytorch_model.bin.index.json``) and the tokenizer (``tokenizer.model`` or
``tokenizer.json``).  Weight names are the network's own ``state_dict`` names.

The CLIP tower comes from the checkpoint (``model.visual_tower.visual_tower.vision_model.*``)
when it is there, otherwise from ``mm_visual_tower`` when that is a local folder (a
``CLIPModel`` or ``CLIPVisionModel`` checkpoint), or from an explicit ``clip_path`` (which
then wins over both).  Our own saves add two keys the release code ignores:
``vision_config`` (the CLIP shape) and ``num_event_images``.

Every failure names the file and the key: a missing file, a missing or unexpected or
wrongly shaped weight.  Nothing is returned half-loaded.

This file holds :func:`load_eventgpt` and :func:`save_eventgpt`; the parts live in
:mod:`evspec.models.eventgpt_layout` (``config.json``, tokenizer, event tokens) and
:mod:`evspec.models.eventgpt_weights` (weight files, copying by name), and are
re-exported here.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from safetensors.torch import save_file
from transformers import PreTrainedTokenizerBase

from evspec.models.eventgpt_layout import (
    OFFICIAL_MODEL_TYPE,
    add_event_tokens,
    config_from_dict,
    config_to_dict,
    load_tokenizer,
    local_clip_dir,
    resize_vocab,
    resolve_vision_config,
)
from evspec.models.eventgpt_modules import EventGPTModel, build_model
from evspec.models.safe_load import check_safetensors, read_json_object
from evspec.models.eventgpt_weights import (
    IGNORED_SUFFIXES,
    VISION_PREFIX,
    copy_weight,
    existing_weight_files,
    load_clip_weights,
    read_weights,
    weight_files,
)

__all__ = [
    "OFFICIAL_MODEL_TYPE",
    "VISION_PREFIX",
    "add_event_tokens",
    "config_from_dict",
    "config_to_dict",
    "load_eventgpt",
    "load_tokenizer",
    "read_weights",
    "resize_vocab",
    "save_eventgpt",
    "weight_files",
]

log = logging.getLogger(__name__)


def load_eventgpt(
    path: str | Path,
    *,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    clip_path: str | Path | None = None,
) -> tuple[EventGPTModel, PreTrainedTokenizerBase]:
    """Load a release folder into an :class:`EventGPTModel` plus its tokenizer.

    Weights are created directly on ``device`` in ``dtype`` and filled shard by shard.
    ``clip_path``: a local CLIP folder whose vision weights replace the checkpoint's.
    """
    folder = Path(path)
    if torch.device(device).type == "meta":
        raise ValueError(
            "cannot load weights onto the meta device; use EventGPT.from_preset(..., device='meta')"
        )
    if not folder.is_dir():
        raise FileNotFoundError(f"EventGPT checkpoint folder {folder} does not exist")
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(f"{config_file} is missing (expected the EventGPT release layout)")
    raw = read_json_object(config_file, "restore the release's config.json")
    explicit = Path(clip_path) if clip_path is not None else None
    if explicit is not None and not (explicit / "config.json").is_file():
        raise FileNotFoundError(
            f"clip_path {explicit} has no config.json (expected a CLIP checkpoint folder)"
        )
    clip_dir = explicit or local_clip_dir(raw.get("mm_visual_tower"), folder)
    vision = resolve_vision_config(raw, explicit, clip_dir, config_file)
    config = config_from_dict(raw, vision, source=str(config_file))
    files = weight_files(folder)
    for file in files:  # a torn or foreign weight file fails here, before any allocation
        if file.suffix == ".safetensors":
            check_safetensors(file, "re-download or re-export the checkpoint")
    tokenizer = load_tokenizer(folder)

    model = build_model(config, dtype=dtype, device=device, seed=None)  # uninitialised
    expected = model.state_dict()  # name -> tensor sharing the parameters' storage
    loaded: set[str] = set()
    unexpected: list[str] = []
    for file in files:
        for name, tensor in read_weights(file).items():
            if name.endswith(IGNORED_SUFFIXES):
                continue
            if explicit is not None and name.startswith(VISION_PREFIX):
                continue  # clip_path replaces the checkpoint's tower
            if name not in expected:
                unexpected.append(f"{name} ({file.name})")
                continue
            copy_weight(name, tensor, expected[name], file)
            loaded.add(name)
    if unexpected:
        raise ValueError(
            f"{folder}: {len(unexpected)} weight(s) this EventGPT does not have, e.g. "
            f"{', '.join(unexpected[:5])}; check config.json (event_feature_adaptor, layers, ...)"
        )
    if not any(name.startswith(VISION_PREFIX) for name in loaded):
        if clip_dir is None:
            raise FileNotFoundError(
                f"{folder}: the checkpoint holds no vision-tower weights ({VISION_PREFIX}*) and "
                f"mm_visual_tower {raw.get('mm_visual_tower')!r} is not a local folder; pass "
                "clip_path=<folder of openai/clip-vit-large-patch14-336>"
            )
        load_clip_weights(clip_dir, expected, loaded)
    missing = [name for name in expected if name not in loaded]
    if missing:
        where = ", ".join(f.name for f in files)
        raise ValueError(
            f"{folder}: {len(missing)} weight(s) missing (looked in {where}), e.g. "
            f"{', '.join(missing[:5])}"
        )

    if add_event_tokens(tokenizer, config) and len(tokenizer) > model.lm_head.weight.shape[0]:
        log.info("EventGPT: vocabulary grown to %d for the event tokens", len(tokenizer))
        resize_vocab(model, len(tokenizer))
    return model, tokenizer


def save_eventgpt(
    model: EventGPTModel,
    tokenizer: PreTrainedTokenizerBase,
    path: str | Path,
    *,
    include_vision: bool = True,
    max_shard_bytes: int = 5 * 2**30,
) -> Path:
    """Write ``model`` and ``tokenizer`` in the release layout: ``config.json``,
    ``model.safetensors`` (or shards of at most ``max_shard_bytes`` plus
    ``model.safetensors.index.json``) and the tokenizer files.

    ``include_vision=False`` leaves the CLIP out; loading then needs ``mm_visual_tower``
    to be a local CLIP folder, or ``clip_path``.  Refuses a folder holding weight files it
    would not overwrite (a stale index would shadow the new weights).
    """
    if model.lm_head.weight.device.type == "meta":
        raise ValueError("cannot save a model built on the meta device (it has no weight values)")
    if max_shard_bytes < 1:
        raise ValueError(f"max_shard_bytes must be >= 1, got {max_shard_bytes}")
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    state = {
        name: tensor.detach().to("cpu").contiguous()
        for name, tensor in model.state_dict().items()
        if include_vision or not name.startswith(VISION_PREFIX)
    }
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for name, tensor in state.items():
        nbytes = tensor.numel() * tensor.element_size()
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][name] = tensor
        size += nbytes
    n = len(shards)
    names = [f"model-{i + 1:05d}-of-{n:05d}.safetensors" for i in range(n)]
    if n == 1:
        names = ["model.safetensors"]
    planned = set(names) | ({"model.safetensors.index.json"} if n > 1 else set())
    stale = existing_weight_files(folder) - planned
    if stale:
        raise FileExistsError(
            f"{folder} already holds weight files {sorted(stale)} that this save would not "
            "replace; save into an empty folder"
        )
    for name, shard in zip(names, shards):
        save_file(shard, str(folder / name), metadata={"format": "pt"})
    if n > 1:
        index = {
            "metadata": {"total_size": sum(t.numel() * t.element_size() for t in state.values())},
            "weight_map": {k: name for name, shard in zip(names, shards) for k in shard},
        }
        (folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
    dtype = model.lm_head.weight.dtype
    (folder / "config.json").write_text(json.dumps(config_to_dict(model.config, dtype=dtype), indent=2))
    tokenizer.save_pretrained(folder)
    return folder
