"""Checks of a local Video-LLaVA checkpoint folder (the ``LanguageBind/Video-LLaVA-7B-hf``
layout) for :meth:`evspec.models.target.VideoLlavaTarget.from_pretrained`: fail early,
naming the missing file, and turn transformers' loading report into an error naming the
missing or wrongly shaped weights (transformers would otherwise initialise them at random
with only a log line).
"""

from __future__ import annotations

import json
from pathlib import Path

from evspec.models.safe_load import check_safetensors, read_json_object


def check_checkpoint_folder(folder: Path) -> None:
    """Fail early, naming the file, when a checkpoint folder is incomplete."""
    if not folder.is_dir():
        raise FileNotFoundError(f"checkpoint folder {folder} does not exist")
    config = folder / "config.json"
    if not config.is_file():
        raise FileNotFoundError(f"{config} is missing (expected the Video-LLaVA-7B-hf layout)")
    model_type = read_json_object(config, "restore the checkpoint's config.json").get("model_type")
    if model_type != "video_llava":
        raise ValueError(f"{config}: model_type is {model_type!r}, expected 'video_llava'")
    single, index = folder / "model.safetensors", folder / "model.safetensors.index.json"
    if index.is_file():
        weight_map = read_json_object(index, "restore the checkpoint's index").get("weight_map")
        shards = sorted(set(weight_map.values())) if isinstance(weight_map, dict) else []
        if not shards:
            raise ValueError(f"{index} has an empty weight_map")
        odd = [s for s in shards if not isinstance(s, str) or Path(s).name != s
               or s in ("", ".", "..")]
        if odd:
            raise ValueError(f"{index}: shard names must be plain file names in the folder, "
                             f"got {odd[:3]}")
        missing = [s for s in shards if not (folder / s).is_file()]
        if missing:
            raise FileNotFoundError(
                f"{folder}: weight shards listed in {index.name} are missing: {missing}"
            )
    elif not single.is_file():
        raise FileNotFoundError(
            f"{folder}: no weights (expected model.safetensors or model.safetensors.index.json)"
        )
    else:
        shards = [single.name]
    for shard in shards:  # headers only: a torn or foreign file fails before transformers loads
        check_safetensors(folder / shard, "re-download or re-export the checkpoint")
    if not any((folder / f).is_file() for f in ("tokenizer.json", "tokenizer.model")):
        raise FileNotFoundError(
            f"{folder}: no tokenizer (expected tokenizer.json or tokenizer.model)"
        )
    if not (folder / "preprocessor_config.json").is_file():
        raise FileNotFoundError(
            f"{folder / 'preprocessor_config.json'} is missing (the frame preprocessing settings)"
        )


def raise_on_bad_weights(folder: Path, info: dict) -> None:
    """Turn transformers' loading report into an error naming the bad weights."""
    missing = sorted(info.get("missing_keys") or [])
    mismatched = sorted(info.get("mismatched_keys") or [])
    problems = []
    if missing:
        problems.append(f"missing weights: {', '.join(missing)}")
    if mismatched:
        shapes = [f"{k} (checkpoint {tuple(a)} vs model {tuple(b)})" for k, a, b in mismatched]
        problems.append(f"wrongly shaped weights: {', '.join(shapes)}")
    if problems:
        raise ValueError(
            f"checkpoint {folder} does not match its config.json: " + "; ".join(problems)
        )


def processor_settings(config: object) -> dict[str, object]:
    """``VideoLlavaProcessor``'s settings for a model config: it expands ``<video>`` into
    ``(S // patch) ** 2 + num_additional_image_tokens`` ids per frame, so a folder whose
    patch size is not the processor's default (14) must say so, or transformers' pipeline
    builds a prompt that does not match the model's features."""
    vision = config.vision_config  # type: ignore[attr-defined]
    return {
        "processor_class": "VideoLlavaProcessor",
        "patch_size": int(vision.patch_size),
        "vision_feature_select_strategy": config.vision_feature_select_strategy,  # type: ignore
        "num_additional_image_tokens": 1,  # CLIP's CLS: patches + 1 ids per frame
    }


def write_processor_config(folder: Path, config: object) -> Path:
    """Write ``processor_config.json`` (what the 7B-hf release ships) into ``folder``."""
    path = Path(folder) / "processor_config.json"
    path.write_text(json.dumps(processor_settings(config), indent=2) + "\n")
    return path
