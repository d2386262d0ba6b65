"""EventGPT's release layout, all but the weights: ``config.json`` and the tokenizer.

``config.json`` <-> :class:`~evspec.models.eventgpt_config.EventGPTConfig`
(:func:`config_to_dict`, :func:`config_from_dict`), where the CLIP's shape comes from
(:func:`resolve_vision_config`, :func:`local_clip_dir`), and the tokenizer with the
optional event tokens (:func:`load_tokenizer`, :func:`add_event_tokens`,
:func:`resize_vocab`).  The keys are described in :mod:`evspec.models.eventgpt_loader`,
which composes these with :mod:`evspec.models.eventgpt_weights` into load and save.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import AutoTokenizer, CLIPVisionConfig, LlamaConfig, PreTrainedTokenizerBase

from evspec.models.eventgpt_config import CONTEXT_CAP, EV_END, EV_PATCH, EV_START, EventGPTConfig
from evspec.models.eventgpt_modules import EventGPTModel

OFFICIAL_MODEL_TYPE = "EventChat_llama"
#: our key for :attr:`EventGPTConfig.prompt_style` (the release's code ignores it)
PROMPT_STYLE_KEY = "evspec_prompt_style"
#: our key for :attr:`EventGPTConfig.world` (written only when true)
WORLD_KEY = "evspec_world"
_OUR_KEYS = frozenset(
    {
        "mm_visual_tower",
        "mm_hidden_size",
        "event_feature_adaptor",
        "mm_use_im_start_end",
        "mm_use_im_patch_token",
        "tokenizer_model_max_length",
        "vision_config",
        "num_event_images",
        PROMPT_STYLE_KEY,
        WORLD_KEY,
    }
)
_LLAMA_KEYS = (set(LlamaConfig().to_dict()) | {"rope_theta", "rope_scaling"}) - {
    "model_type",
    "architectures",
    "dtype",
    "transformers_version",
    "_name_or_path",
}


# -- config.json ---------------------------------------------------------------------------


def config_to_dict(config: EventGPTConfig, *, dtype: torch.dtype | None = None) -> dict[str, Any]:
    """The release's ``config.json`` content for ``config``."""
    out = {k: v for k, v in config.llama.to_dict().items() if k in _LLAMA_KEYS}
    out["rope_theta"] = float(config.llama.rope_parameters["rope_theta"])
    vision = {
        k: v
        for k, v in config.vision.to_dict().items()
        if k not in ("transformers_version", "_name_or_path", "architectures", "dtype")
    }
    out.update(
        architectures=["EventChatModel"],
        model_type=OFFICIAL_MODEL_TYPE,
        mm_visual_tower=config.mm_visual_tower,
        mm_hidden_size=int(config.vision.hidden_size),
        mm_use_im_start_end=config.mm_use_im_start_end,
        mm_use_im_patch_token=config.mm_use_im_patch_token,
        tokenizer_model_max_length=config.max_context,
        vision_config=vision,
        num_event_images=config.n_event_images,
    )
    out[PROMPT_STYLE_KEY] = config.prompt_style
    if config.world:
        out[WORLD_KEY] = True
    if config.event_feature_adaptor:
        out["event_feature_adaptor"] = True
    if dtype is not None:
        out["torch_dtype"] = str(dtype).removeprefix("torch.")
    return out


def config_from_dict(
    raw: dict[str, Any], vision: CLIPVisionConfig, *, source: str = "config.json"
) -> EventGPTConfig:
    """An :class:`EventGPTConfig` from the release's ``config.json`` and the CLIP's config.

    Defaults where a key is missing are the release inference's: ``mm_use_im_patch_token``
    True (``<ev_patch>`` joins the vocabulary), ``mm_use_im_start_end`` False.  The prompt
    style is our key when present; otherwise ``"release"``, except for a vision tower named
    ``evspec/...`` (one of evspec's own small models, trained on the bare prompt).
    """
    if raw.get("model_type") != OFFICIAL_MODEL_TYPE:
        raise ValueError(
            f"{source}: model_type is {raw.get('model_type')!r}, expected "
            f"{OFFICIAL_MODEL_TYPE!r} (the EventGPT release layout)"
        )
    if "mm_visual_tower" not in raw:
        raise ValueError(
            f"{source}: no 'mm_visual_tower' key, so no vision tower: not an EventGPT checkpoint"
        )
    mm_hidden = raw.get("mm_hidden_size")
    if mm_hidden is not None and int(mm_hidden) != int(vision.hidden_size):
        raise ValueError(
            f"{source}: mm_hidden_size {mm_hidden} differs from the CLIP's hidden_size "
            f"{vision.hidden_size}; the vision tower does not belong to this checkpoint"
        )
    llama = LlamaConfig(**{k: v for k, v in raw.items() if k in _LLAMA_KEYS})
    max_context = int(raw.get("tokenizer_model_max_length") or CONTEXT_CAP)
    tower = str(raw["mm_visual_tower"])
    style = raw.get(PROMPT_STYLE_KEY) or ("bare" if tower.startswith("evspec/") else "release")
    return EventGPTConfig(
        llama=llama,
        vision=vision,
        n_event_images=int(raw.get("num_event_images", 5)),
        event_feature_adaptor="event_feature_adaptor" in raw,  # presence, as the release
        mm_use_im_start_end=bool(raw.get("mm_use_im_start_end", False)),
        mm_use_im_patch_token=bool(raw.get("mm_use_im_patch_token", True)),
        mm_visual_tower=tower,
        max_context=min(max_context, int(llama.max_position_embeddings)),
        prompt_style=str(style),
        world=raw.get(WORLD_KEY, False) is True,
    )


def local_clip_dir(tower: str | None, folder: Path) -> Path | None:
    """``mm_visual_tower`` as a local CLIP folder (absolute, or relative to ``folder``)."""
    if not tower:
        return None
    for candidate in (Path(tower), folder / tower):
        if (candidate / "config.json").is_file():
            return candidate
    return None


def resolve_vision_config(
    raw: dict[str, Any], explicit: Path | None, local: Path | None, source: Path
) -> CLIPVisionConfig:
    """The CLIP's shape: an explicit ``clip_path`` first, then our ``vision_config`` key,
    then ``mm_visual_tower`` as a local folder, then the known CLIP-L/14-336 by name."""
    if explicit is not None:
        return CLIPVisionConfig.from_pretrained(explicit)
    if isinstance(raw.get("vision_config"), dict):
        return CLIPVisionConfig(**raw["vision_config"])
    if local is not None:
        return CLIPVisionConfig.from_pretrained(local)
    tower = str(raw.get("mm_visual_tower", ""))
    if "clip-vit-large-patch14-336" in tower:
        from evspec.models.presets.eventgpt import clip_l14_336

        return clip_l14_336()
    raise ValueError(
        f"{source}: cannot tell the CLIP's shape: no 'vision_config' key and mm_visual_tower "
        f"{tower!r} is neither a local folder nor CLIP-L/14-336; pass clip_path=<CLIP folder>"
    )


# -- tokenizer -----------------------------------------------------------------------------


def load_tokenizer(folder: Path) -> PreTrainedTokenizerBase:
    """The checkpoint's tokenizer (``tokenizer.json``, or SentencePiece ``tokenizer.model``
    as a LLaMA tokenizer)."""
    if not any((folder / f).is_file() for f in ("tokenizer.json", "tokenizer.model")):
        raise FileNotFoundError(f"{folder}: no tokenizer (expected tokenizer.model or tokenizer.json)")
    # ``config=`` keeps AutoTokenizer from parsing our config.json (model_type unknown to it).
    return AutoTokenizer.from_pretrained(folder, config=LlamaConfig())


def add_event_tokens(tokenizer: PreTrainedTokenizerBase, config: EventGPTConfig) -> int:
    """Add ``<ev_patch>`` / ``<ev_start> <ev_end>`` as the config flags ask, in place, as
    the release's ``initialize_vision_tokenizer``; returns how many were new."""
    added = 0
    if config.mm_use_im_patch_token:
        added += tokenizer.add_tokens([EV_PATCH], special_tokens=True)
    if config.mm_use_im_start_end:
        added += tokenizer.add_tokens([EV_START, EV_END], special_tokens=True)
    return added


def resize_vocab(model: EventGPTModel, size: int) -> None:
    """Grow the input embedding and the LM head to ``size`` rows; new rows are the mean of
    the old ones (the release's initialisation of added tokens)."""
    embed, head = model.model.embed_tokens, model.lm_head
    old = int(embed.weight.shape[0])
    if size <= old:
        return
    with torch.no_grad():
        for module in (embed, head):
            weight = module.weight  # [old, H]
            grown = torch.empty(size, weight.shape[1], device=weight.device, dtype=weight.dtype)
            grown[:old] = weight
            grown[old:] = weight.float().mean(dim=0).to(weight.dtype)
            module.weight = nn.Parameter(grown, requires_grad=weight.requires_grad)
    embed.num_embeddings = size
    head.out_features = size
    model.config.llama.vocab_size = size
