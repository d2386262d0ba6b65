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
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoTokenizer, CLIPVisionConfig, LlamaConfig, PreTrainedTokenizerBase

from evspec.models.eventgpt import (
    CONTEXT_CAP,
    EV_END,
    EV_PATCH,
    EV_START,
    EventGPTConfig,
    EventGPTModel,
    build_model,
)

log = logging.getLogger(__name__)

OFFICIAL_MODEL_TYPE = "EventChat_llama"
VISION_PREFIX = "model.visual_tower.visual_tower.vision_model."
_CLIP_TOP = ("embeddings.", "pre_layrnorm.", "encoder.", "post_layernorm.")
# Buffers that older transformers versions saved and the network recomputes.
_IGNORED_SUFFIXES = ("rotary_emb.inv_freq", "embeddings.position_ids")
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
    }
)
_LLAMA_KEYS = (set(LlamaConfig().to_dict()) | {"rope_theta", "rope_scaling"}) - {
    "model_type",
    "architectures",
    "dtype",
    "transformers_version",
    "_name_or_path",
}
_INDEX_FILES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
_SINGLE_FILES = ("model.safetensors", "pytorch_model.bin")


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
    if config.event_feature_adaptor:
        out["event_feature_adaptor"] = True
    if dtype is not None:
        out["torch_dtype"] = str(dtype).removeprefix("torch.")
    return out


def config_from_dict(
    raw: dict[str, Any], vision: CLIPVisionConfig, *, source: str = "config.json"
) -> EventGPTConfig:
    """An :class:`EventGPTConfig` from the release's ``config.json`` and the CLIP's config."""
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
    return EventGPTConfig(
        llama=llama,
        vision=vision,
        n_event_images=int(raw.get("num_event_images", 5)),
        event_feature_adaptor="event_feature_adaptor" in raw,  # presence, as the release
        mm_use_im_start_end=bool(raw.get("mm_use_im_start_end", False)),
        mm_use_im_patch_token=bool(raw.get("mm_use_im_patch_token", False)),
        mm_visual_tower=str(raw["mm_visual_tower"]),
        max_context=min(max_context, int(llama.max_position_embeddings)),
    )


def _local_clip_dir(tower: str | None, folder: Path) -> Path | None:
    """``mm_visual_tower`` as a local CLIP folder (absolute, or relative to ``folder``)."""
    if not tower:
        return None
    for candidate in (Path(tower), folder / tower):
        if (candidate / "config.json").is_file():
            return candidate
    return None


def _vision_config(
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


# -- weight files --------------------------------------------------------------------------


def weight_files(folder: Path) -> list[Path]:
    """The weight files of a checkpoint folder, resolving a sharded index."""
    for name in _INDEX_FILES:
        index = folder / name
        if index.is_file():
            weight_map = json.loads(index.read_text()).get("weight_map")
            if not isinstance(weight_map, dict) or not weight_map:
                raise ValueError(f"{index}: no 'weight_map' (expected {{weight name: shard file}})")
            shards = sorted(set(weight_map.values()))
            missing = [s for s in shards if not (folder / s).is_file()]
            if missing:
                raise FileNotFoundError(
                    f"{folder}: shard file(s) {missing} listed in {name} are missing"
                )
            return [folder / s for s in shards]
    for name in _SINGLE_FILES:
        if (folder / name).is_file():
            return [folder / name]
    raise FileNotFoundError(
        f"{folder}: no weights; expected one of {', '.join(_INDEX_FILES + _SINGLE_FILES)}"
    )


def read_weights(file: Path) -> dict[str, torch.Tensor]:
    """All tensors of one ``.safetensors`` or ``.bin`` file, on the CPU."""
    if file.suffix == ".safetensors":
        return load_file(str(file), device="cpu")
    data = torch.load(file, map_location="cpu", weights_only=True)
    if not isinstance(data, dict) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise ValueError(f"{file}: expected a flat {{name: tensor}} state dict")
    return data


def _copy(name: str, src: torch.Tensor, dst: torch.Tensor, file: Path) -> None:
    if tuple(src.shape) != tuple(dst.shape):
        raise ValueError(
            f"{file.name}: weight {name!r} has shape {tuple(src.shape)} but config.json implies "
            f"{tuple(dst.shape)}; the weights and config.json do not belong together"
        )
    with torch.no_grad():
        dst.copy_(src)


def _load_clip_weights(clip_dir: Path, expected: dict[str, torch.Tensor], loaded: set[str]) -> None:
    """Copy a CLIP checkpoint's vision weights (``vision_model.*`` of a CLIPModel, or a
    CLIPVisionModel's own names) into the tower."""
    for file in weight_files(clip_dir):
        for key, tensor in read_weights(file).items():
            bare = key.removeprefix("vision_model.")
            if key.endswith(_IGNORED_SUFFIXES) or not bare.startswith(_CLIP_TOP):
                continue  # text tower, projections, logit scale
            name = VISION_PREFIX + bare
            if name not in expected:
                raise ValueError(f"{file}: CLIP weight {key!r} does not fit the vision tower")
            _copy(name, tensor, expected[name], file)
            loaded.add(name)


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


# -- load / save ---------------------------------------------------------------------------


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
    raw = json.loads(config_file.read_text())
    explicit = Path(clip_path) if clip_path is not None else None
    if explicit is not None and not (explicit / "config.json").is_file():
        raise FileNotFoundError(
            f"clip_path {explicit} has no config.json (expected a CLIP checkpoint folder)"
        )
    clip_dir = explicit or _local_clip_dir(raw.get("mm_visual_tower"), folder)
    vision = _vision_config(raw, explicit, clip_dir, config_file)
    config = config_from_dict(raw, vision, source=str(config_file))
    files = weight_files(folder)
    tokenizer = load_tokenizer(folder)

    model = build_model(config, dtype=dtype, device=device, seed=None)  # uninitialised
    expected = model.state_dict()  # name -> tensor sharing the parameters' storage
    loaded: set[str] = set()
    unexpected: list[str] = []
    for file in files:
        for name, tensor in read_weights(file).items():
            if name.endswith(_IGNORED_SUFFIXES):
                continue
            if explicit is not None and name.startswith(VISION_PREFIX):
                continue  # clip_path replaces the checkpoint's tower
            if name not in expected:
                unexpected.append(f"{name} ({file.name})")
                continue
            _copy(name, tensor, expected[name], file)
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
        _load_clip_weights(clip_dir, expected, loaded)
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


def _existing_weight_files(folder: Path) -> set[str]:
    patterns = (
        "model*.safetensors",
        "model.safetensors.index.json",
        "pytorch_model*.bin",
        "pytorch_model.bin.index.json",
    )
    return {p.name for pattern in patterns for p in folder.glob(pattern)}


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
    stale = _existing_weight_files(folder) - planned
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
