"""The two world models: build them fresh from the world presets, load them from checkpoint
folders, export them in fp16.

* target = :class:`~evspec.models.target.VideoLlavaTarget` (transformers VideoLlava) on the
  world *target* tokenizer (shared vocabulary + ``<image> <video> <pad>``), 8 frames;
* drafter = :class:`~evspec.models.eventgpt.EventGPT` on the world *drafter* tokenizer
  (the shared vocabulary), n = 5 event images.

Both tokenizers come from the world folder (``tokenizer/``, written by ``world generate``)
or, when absent, are rebuilt from the code (the vocabulary is a pure function of it).
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import (
    PreTrainedTokenizerFast,
    VideoLlavaForConditionalGeneration,
    VideoLlavaImageProcessor,
)

from evspec.models.eventgpt import EventGPT, build_model
from evspec.models.presets.eventgpt import world_eventgpt_preset
from evspec.models.presets.target import world_target_preset
from evspec.models.safe_load import read_json_object
from evspec.models.target import VideoLlavaTarget

WorldModel = VideoLlavaTarget | EventGPT
NUM_FRAMES = 8  # Video-LLaVA samples 8 frames per clip
N_EVENT_IMAGES = 5  # EventGPT's official n
#: std of the CLIP position embeddings of a *fresh* world model.  CLIP's own init (0.02,
#: ``initializer_range``) leaves them ~15x smaller than a patch embedding (~0.3 for a
#: CLIP-normalised 8x8 patch), so a tower trained from scratch stays nearly permutation-
#: equivariant: the shipped models of 2026-11-29 kept a position std of 0.032 after 3158
#: steps and answered from the bag of colours only.  Pretrained CLIPs have
#: learned position embeddings; 0.2 puts ours on the scale of the patch content.
POSITION_INIT_STD = 0.2


def world_tokenizers(data: str | Path | None) -> tuple[PreTrainedTokenizerFast, PreTrainedTokenizerFast]:
    """``(drafter, target)`` world tokenizers: from ``data/tokenizer`` when a world folder
    holds them, else rebuilt from the code."""
    from evspec.data.world.tokenizer import build_world_tokenizers, load_world_tokenizers

    folder = None if data is None else Path(data) / "tokenizer"
    if folder is not None and (folder / "target" / "tokenizer.json").is_file():
        return load_world_tokenizers(folder)
    return build_world_tokenizers()


def build_world_model(
    role: str,
    preset: str,
    tokenizers: tuple[PreTrainedTokenizerFast, PreTrainedTokenizerFast],
    *,
    seed: int,
    device: str | torch.device = "cpu",
) -> WorldModel:
    """A freshly initialised world model (float32, seeded) for ``role`` on ``device``.

    The architecture and init are the presets' (transformers / evspec defaults) except the
    vision position embeddings, drawn with :data:`POSITION_INIT_STD` (see there)."""
    device = torch.device(device)
    drafter_tok, target_tok = tokenizers
    if role == "target":
        p = world_target_preset(preset, target_tok, num_frames=NUM_FRAMES)
        devices = [device.index or 0] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices), torch.device(device):
            torch.manual_seed(seed)
            if device.type == "cuda":
                torch.cuda.manual_seed(seed)
            model = VideoLlavaForConditionalGeneration._from_config(p.to_config(), dtype=torch.float32)
        size = p.vision.image_size
        processor = VideoLlavaImageProcessor(
            size={"shortest_edge": size}, crop_size={"height": size, "width": size}
        )
        target = VideoLlavaTarget(model, target_tok, processor, num_frames=NUM_FRAMES)
        _widen_positions(target, POSITION_INIT_STD, seed)
        return target
    if role == "drafter":
        p = world_eventgpt_preset(preset, drafter_tok, n_event_images=N_EVENT_IMAGES)
        model = build_model(p.config(), dtype=torch.float32, device=device, seed=seed)
        drafter = EventGPT(model, drafter_tok)
        _widen_positions(drafter, POSITION_INIT_STD, seed)
        return drafter
    raise ValueError(f"role = {role!r}: use 'target' or 'drafter'")


def vision_position_embeddings(wrapper: WorldModel) -> list[torch.nn.Embedding]:
    """The position embeddings of the CLIP towers a world model actually uses (the
    target's video tower; the drafter's visual tower)."""
    if isinstance(wrapper, VideoLlavaTarget):
        return [wrapper.model.model.video_tower.embeddings.position_embedding]
    return [wrapper.model.model.visual_tower.visual_tower.vision_model.embeddings.position_embedding]


def _widen_positions(wrapper: WorldModel, std: float, seed: int) -> None:
    """Re-draw the vision position embeddings with ``std`` (seeded, on their device)."""
    for emb in vision_position_embeddings(wrapper):
        gen = torch.Generator(device=emb.weight.device).manual_seed(seed + 7919)
        with torch.no_grad():
            emb.weight.normal_(0.0, std, generator=gen)


def checkpoint_role(folder: str | Path) -> str:
    """``"target"`` or ``"drafter"``, read from ``folder/config.json``'s ``model_type``."""
    config = Path(folder) / "config.json"
    if not config.is_file():
        raise FileNotFoundError(f"{config} is missing: {folder} is not a model checkpoint folder")
    model_type = read_json_object(config, "restore the checkpoint's config.json").get("model_type")
    if model_type == "video_llava":
        return "target"
    if model_type == "EventChat_llama":
        return "drafter"
    raise ValueError(
        f"{config}: model_type {model_type!r} is neither 'video_llava' (target) nor "
        "'EventChat_llama' (drafter)"
    )


def load_world_model(
    folder: str | Path,
    *,
    role: str | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> WorldModel:
    """Load a world checkpoint folder (either layout); ``role`` is checked when given."""
    found = checkpoint_role(folder)
    if role is not None and role != found:
        raise ValueError(f"{folder} holds a {found} checkpoint, but a {role} was asked for")
    from evspec.loading import ModelSpec, load_models

    folder, name = str(folder), str(dtype).removeprefix("torch.")
    spec = ModelSpec(target=folder if found == "target" else None,
                     draft_model=folder if found == "drafter" else None,
                     device=str(torch.device(device)), dtype=name)
    loaded = load_models(spec)
    return loaded.target if found == "target" else loaded.draft


def export_fp16(src: str | Path, dst: str | Path) -> Path:
    """Write the checkpoint in ``src`` to ``dst`` with fp16 weights (same layout), for
    shipping.  ``dst`` must not hold another checkpoint's weights."""
    model = load_world_model(src)
    if isinstance(model, EventGPT):
        model.config.world = True  # declared: loaders render its clips as the world was trained
    model.model.to(torch.float16)
    dst = Path(dst)
    if (dst / "model.safetensors").exists():
        raise FileExistsError(f"{dst} already holds model.safetensors; export into an empty folder")
    return model.save_pretrained(dst)


def checkpoint_bytes(folder: str | Path) -> int:
    """Size of the weight files of a checkpoint folder."""
    return sum(p.stat().st_size for p in Path(folder).glob("*.safetensors"))
