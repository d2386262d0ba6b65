"""A folder evspec saves gives, through transformers' own documented Video-LLaVA pipeline
(the tokenizer and image processor of the folder, ``VideoLlavaForConditionalGeneration
.generate``), the same greedy answer as evspec gives: same BOS, same question text.

transformers' ``VideoLlavaProcessor`` needs torchvision; where it is missing the test builds
what the processor builds (``<video>`` repeated once per video token, then the folder's
tokenizer on the text; the folder's image processor frame by frame) and the processor
itself is checked where torchvision is present.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import (
    AutoTokenizer,
    VideoLlavaForConditionalGeneration,
    VideoLlavaImageProcessor,
    VideoLlavaProcessor,
)

from evspec.decoding.engine import generate
from evspec.models.request import Request
from evspec.models.target import VideoLlavaTarget

WORLD_TARGET = Path(__file__).resolve().parents[2] / "src/evspec/assets/world/target"
QUESTIONS = ("What is moving?", "  what is the car doing?\n")
NEW = 6


def hf_answer(folder: Path, question: str, video: np.ndarray, n_video_tokens: int) -> list[int]:
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = VideoLlavaForConditionalGeneration.from_pretrained(folder, dtype=torch.float32).eval()
    prompt = f"USER: <video>\n{question} ASSISTANT:"
    try:
        import torchvision  # noqa: F401
        from transformers import VideoLlavaProcessor
    except ImportError:
        images = VideoLlavaImageProcessor.from_pretrained(folder)
        frames = images(list(video), return_tensors="pt")["pixel_values_images"]  # [T, 3, S, S]
        pixels = frames[None]  # [1, T, 3, S, S]
        expanded = prompt.replace("<video>", "<video>" * n_video_tokens)
        inputs = dict(tokenizer(expanded, return_tensors="pt"), pixel_values_videos=pixels)
    else:
        processor = VideoLlavaProcessor.from_pretrained(folder)
        inputs = processor(text=prompt, videos=video, return_tensors="pt")
    with torch.inference_mode():
        out = model.generate(**inputs, max_new_tokens=NEW, do_sample=False)
    return out[0, inputs["input_ids"].shape[1] :].tolist()


def evspec_answer(
    folder: Path, question: str, video: np.ndarray
) -> tuple[list[int], VideoLlavaTarget]:
    target = VideoLlavaTarget.from_pretrained(folder)
    result = generate(target, Request(question, video=video), max_new_tokens=NEW)
    return list(result.tokens), target


def check_folder(folder: Path, video: np.ndarray) -> None:
    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert tokenizer("a")["input_ids"][0] == tokenizer.bos_token_id  # BOS, as LLaMA's
    for question in QUESTIONS:
        ours, target = evspec_answer(folder, question, video)
        theirs = hf_answer(folder, question, video, target.video_tokens)
        assert ours == theirs[: len(ours)] and len(ours) > 0
        ids = target.build_prompt_ids(question)
        prompt = f"USER: <video>\n{question} ASSISTANT:"
        expanded = prompt.replace("<video>", "<video>" * target.video_tokens)
        assert ids.tolist() == tokenizer(expanded)["input_ids"]


def test_saved_tiny_folder_answers_alike_in_hf(tmp_path: Path) -> None:
    target = VideoLlavaTarget.from_preset("tiny-random", seed=3)
    target.save_pretrained(tmp_path)
    shape = (target.num_frames, 40, 48, 3)
    video = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    check_folder(tmp_path, video)


def test_world_target_answers_alike_in_hf() -> None:
    if not (WORLD_TARGET / "config.json").is_file():
        pytest.skip("world target not shipped")
    target = VideoLlavaTarget.from_pretrained(WORLD_TARGET)
    shape = (target.num_frames, 64, 64, 3)
    video = np.random.default_rng(1).integers(0, 256, shape, dtype=np.uint8)
    check_folder(WORLD_TARGET, video)


def processor_video_ids(folder: Path, target: VideoLlavaTarget) -> int:
    """How many ``<video>`` ids transformers' ``VideoLlavaProcessor`` writes for one video
    with the settings of ``folder/processor_config.json`` (its own counting rule, run
    without the torchvision-only video processor)."""
    settings = json.loads((folder / "processor_config.json").read_text())
    processor = VideoLlavaProcessor.__new__(VideoLlavaProcessor)  # the rule needs no tokenizer
    processor.patch_size = settings["patch_size"]
    processor.num_additional_image_tokens = settings["num_additional_image_tokens"]
    processor.video_token = "<video>"
    size = target.model.config.vision_config.image_size
    pixels = np.zeros((target.num_frames, 3, size, size), np.float32)  # [T, 3, S, S]
    text = processor.replace_video_token({"pixel_values_videos": [pixels]}, 0)
    return text.count("<video>")


@pytest.mark.parametrize("which", ["tiny", "world"])
def test_processor_config_expands_video_like_evspec(tmp_path: Path, which: str) -> None:
    """Without ``processor_config.json`` the processor assumes patch 14 and writes 20 video
    ids for the tiny preset's 68 features; the saved (and shipped) folders say their patch
    size, so the processor's prompt has exactly evspec's video positions."""
    if which == "tiny":
        target = VideoLlavaTarget.from_preset("tiny-random", seed=3)
        folder = target.save_pretrained(tmp_path)
    else:
        if not (WORLD_TARGET / "config.json").is_file():
            pytest.skip("world target not shipped")
        folder, target = WORLD_TARGET, VideoLlavaTarget.from_pretrained(WORLD_TARGET)
    assert processor_video_ids(folder, target) == target.video_tokens
