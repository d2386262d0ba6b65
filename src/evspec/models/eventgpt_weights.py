"""EventGPT's weight files: finding them (a single file or the shards of an index, in
safetensors or ``.bin``), reading them, and copying tensors into the network by name with
shape checks that name the file and the weight; CLIP vision weights from a separate CLIP
checkpoint.  :mod:`evspec.models.eventgpt_loader` composes these into load and save.
"""

from __future__ import annotations

from pathlib import Path

import torch

from evspec.models.safe_load import load_safetensors, load_torch_state, read_json_object

VISION_PREFIX = "model.visual_tower.visual_tower.vision_model."
_CLIP_TOP = ("embeddings.", "pre_layrnorm.", "encoder.", "post_layernorm.")
# Buffers that older transformers versions saved and the network recomputes.
IGNORED_SUFFIXES = ("rotary_emb.inv_freq", "embeddings.position_ids")
_INDEX_FILES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
_SINGLE_FILES = ("model.safetensors", "pytorch_model.bin")


def weight_files(folder: Path) -> list[Path]:
    """The weight files of a checkpoint folder, resolving a sharded index."""
    for name in _INDEX_FILES:
        index = folder / name
        if index.is_file():
            weight_map = read_json_object(index, "restore the checkpoint's index").get("weight_map")
            if not isinstance(weight_map, dict) or not weight_map:
                raise ValueError(f"{index}: no 'weight_map' (expected {{weight name: shard file}})")
            shards = sorted(set(weight_map.values()))
            odd = [s for s in shards if not isinstance(s, str) or Path(s).name != s
                   or s in ("", ".", "..")]
            if odd:
                raise ValueError(f"{index}: shard names must be plain file names in the folder, "
                                 f"got {odd[:3]}")
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
    fix = "re-download or re-export the checkpoint"
    if file.suffix == ".safetensors":
        return load_safetensors(file, fix)
    data = load_torch_state(file, fix)
    if not isinstance(data, dict) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise ValueError(f"{file}: expected a flat {{name: tensor}} state dict")
    return data


def copy_weight(name: str, src: torch.Tensor, dst: torch.Tensor, file: Path) -> None:
    """Copy weight ``name`` read from ``file`` into ``dst`` (same shape, else a ValueError
    naming the file, the weight and both shapes)."""
    if tuple(src.shape) != tuple(dst.shape):
        raise ValueError(
            f"{file.name}: weight {name!r} has shape {tuple(src.shape)} but config.json implies "
            f"{tuple(dst.shape)}; the weights and config.json do not belong together"
        )
    with torch.no_grad():
        dst.copy_(src)


def load_clip_weights(clip_dir: Path, expected: dict[str, torch.Tensor], loaded: set[str]) -> None:
    """Copy a CLIP checkpoint's vision weights (``vision_model.*`` of a CLIPModel, or a
    CLIPVisionModel's own names) into the tower."""
    for file in weight_files(clip_dir):
        for key, tensor in read_weights(file).items():
            bare = key.removeprefix("vision_model.")
            if key.endswith(IGNORED_SUFFIXES) or not bare.startswith(_CLIP_TOP):
                continue  # text tower, projections, logit scale
            name = VISION_PREFIX + bare
            if name not in expected:
                raise ValueError(f"{file}: CLIP weight {key!r} does not fit the vision tower")
            copy_weight(name, tensor, expected[name], file)
            loaded.add(name)


def existing_weight_files(folder: Path) -> set[str]:
    """Names of the weight files (and indexes) already in ``folder``, in any format."""
    patterns = (
        "model*.safetensors",
        "model.safetensors.index.json",
        "pytorch_model*.bin",
        "pytorch_model.bin.index.json",
    )
    return {p.name for pattern in patterns for p in folder.glob(pattern)}
