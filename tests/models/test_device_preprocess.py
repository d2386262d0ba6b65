"""Image preprocessing on the device (torch) against the HF processors (PIL), measured:
bitwise equal at the tower's size; after a real resize at most one uint8 level apart on
fewer than 1 % of the values (PIL's fixed-point resampling against torch's float
arithmetic); the models' switch; a filter torch cannot follow refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from evspec.models.device_preprocess import DevicePixels
from evspec.models.eventgpt import make_image_processor

ASSETS = Path(__file__).resolve().parents[2] / "src" / "evspec" / "assets"
WORLD_TARGET = ASSETS / "world" / "target"


def _processors():
    from transformers import VideoLlavaImageProcessor

    out = [("eventgpt", make_image_processor(64))]
    if (WORLD_TARGET / "preprocessor_config.json").is_file():
        out.append(("video-llava", VideoLlavaImageProcessor.from_pretrained(WORLD_TARGET)))
    return out


def _hf(processor, images: np.ndarray) -> torch.Tensor:
    out = processor.preprocess(list(images), return_tensors="pt", input_data_format="channels_last")
    return next(v for k, v in out.items() if k.startswith("pixel_values"))


@pytest.mark.parametrize("name,processor", _processors())
def test_pixels_match_the_hf_processor(name, processor):
    device_pixels = DevicePixels.from_processor(processor)
    std = torch.tensor(processor.image_std)[None, :, None, None]
    rng = np.random.default_rng(0)
    same = rng.integers(0, 256, (5, 64, 64, 3), dtype=np.uint8)  # the tower's size: no resampling
    assert torch.equal(device_pixels(same, "cpu", torch.float32), _hf(processor, same))
    for shape in ((3, 48, 80, 3), (3, 120, 90, 3), (2, 200, 300, 3)):  # up, down, both aspects
        images = rng.integers(0, 256, shape, dtype=np.uint8)
        got, want = device_pixels(images, "cpu", torch.float32), _hf(processor, images)
        assert got.shape == want.shape == (shape[0], 3, 64, 64)
        levels = ((got - want).abs() * std * 255).round()  # uint8 levels apart
        assert levels.max() <= 1, (name, shape)
        assert (levels > 0).float().mean() < 0.01, (name, shape)


def test_models_switch_to_device_pixels():
    from evspec.models.eventgpt import EventGPT
    from evspec.loading import random_images

    model = EventGPT.from_preset("tiny-random", seed=1)
    size = model.config.image_size
    images = random_images(model.n_event_images, size, 3)
    hf = model.preprocess(images)
    model.enable_device_preprocess()
    assert model.device_pixels is not None
    assert torch.equal(model.preprocess(images), hf)


def test_unfollowable_filter_is_refused():
    processor = make_image_processor(64)
    processor.resample = 1  # LANCZOS
    with pytest.raises(ValueError, match="no torch equivalent"):
        DevicePixels.from_processor(processor)
    with pytest.raises(ValueError, match="uint8"):
        pixels = DevicePixels.from_processor(make_image_processor(64))
        pixels(np.zeros((1, 8, 8, 3)), "cpu", torch.float32)
