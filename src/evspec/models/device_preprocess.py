"""CLIP image preprocessing as torch ops on the model's device.

The HF image processors (PIL backend) resize, crop and normalise each image on the CPU:
at 7B shapes about 25 ms for EventGPT's event images and 20 ms for Video-LLaVA's frames
per request.  :class:`DevicePixels` does the same steps on the device, from the uint8
images uploaded once (the smallest transfer):

1. resize the shortest edge to ``size`` (the long edge ``int(size * long / short)``, as HF
   computes it) with antialiased bicubic interpolation — torch's antialiased kernel is
   PIL's (cubic coefficient -0.5, support widened when shrinking) — and round to uint8
   levels as PIL does; an image already at that size is not resampled (PIL copies it);
2. centre crop (HF's offsets: ``(height - crop) // 2``);
3. rescale by ``rescale_factor`` and normalise by the CLIP mean/std in float32.

Same-size inputs give bitwise HF's pixels; real resizes differ from PIL's fixed-point
arithmetic by at most one uint8 level on some pixels (tests/models/test_device_preprocess.py
measures it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

_MODES = {2: "bilinear", 3: "bicubic"}  # PIL resampling ids torch can follow


def _field(value: Any, key: str) -> Any:
    """``value[key]`` for dict-like sizes (``{"shortest_edge": 64}``), ``value.key`` for HF
    ``SizeDict`` objects."""
    return value.get(key) if isinstance(value, dict) else getattr(value, key, None)


@dataclass(frozen=True)
class DevicePixels:
    """A CLIP-style image processor's steps on the device.  Build with
    :meth:`from_processor`; call on uint8 ``[n, H, W, 3]`` images."""

    shortest_edge: int | None  # None: no resize
    crop: tuple[int, int] | None  # (height, width); None: no crop
    mode: str  # torch interpolation mode
    rescale: float | None
    mean: tuple[float, float, float] | None
    std: tuple[float, float, float] | None

    @classmethod
    def from_processor(cls, processor: Any) -> DevicePixels:
        """The steps of an HF CLIP / Video-LLaVA image processor (``ValueError`` for a
        resampling filter torch cannot follow)."""
        shortest = _field(processor.size, "shortest_edge") if processor.do_resize else None
        if processor.do_resize and shortest is None:
            raise ValueError("DevicePixels follows shortest-edge resizing only; the processor "
                             f"has size {processor.size}")
        crop = None
        if processor.do_center_crop:
            crop_size = processor.crop_size
            crop = (int(_field(crop_size, "height")), int(_field(crop_size, "width")))
        resample = int(processor.resample)
        if resample not in _MODES:
            raise ValueError(f"DevicePixels: resampling filter {resample} has no torch equivalent; "
                             f"use one of {sorted(_MODES)} (bilinear, bicubic)")
        norm = bool(processor.do_normalize)
        return cls(
            shortest_edge=None if shortest is None else int(shortest),
            crop=crop,
            mode=_MODES[resample],
            rescale=float(processor.rescale_factor) if processor.do_rescale else None,
            mean=tuple(map(float, processor.image_mean)) if norm else None,  # type: ignore
            std=tuple(map(float, processor.image_std)) if norm else None,  # type: ignore
        )

    def resized_size(self, height: int, width: int) -> tuple[int, int]:
        """HF's output size of a shortest-edge resize (the long edge truncated)."""
        if self.shortest_edge is None:
            return height, width
        s = self.shortest_edge
        if height <= width:
            return s, int(s * width / height)
        return int(s * height / width), s

    @torch.inference_mode()
    def __call__(self, images: np.ndarray | torch.Tensor, device: torch.device | str,
                 dtype: torch.dtype) -> torch.Tensor:
        """uint8 ``[n, H, W, 3]`` -> pixels ``[n, 3, S, S]`` on ``device`` in ``dtype``."""
        if isinstance(images, np.ndarray):
            if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
                raise ValueError("DevicePixels takes uint8 [n, H, W, 3] images; got "
                                 f"{images.dtype} {tuple(images.shape)}")
            images = torch.from_numpy(np.ascontiguousarray(images))
        x = images.to(device, non_blocking=True).permute(0, 3, 1, 2).float()  # [n, 3, H, W], 0..255
        h, w = x.shape[-2:]
        size = self.resized_size(h, w)
        # PIL resamples horizontally, then vertically, each pass into uint8 (rounded, clipped)
        for step in ((h, size[1]), size):
            if step != tuple(x.shape[-2:]):
                x = F.interpolate(x, size=step, mode=self.mode, align_corners=False, antialias=True)
                x = x.round_().clamp_(0.0, 255.0)
        if self.crop is not None:
            ch, cw = self.crop
            h, w = x.shape[-2:]
            if ch > h or cw > w:
                raise ValueError(f"DevicePixels: crop {self.crop} is larger than the resized "
                                 f"image {(h, w)}")
            top, left = (h - ch) // 2, (w - cw) // 2
            x = x[..., top : top + ch, left : left + cw]
        if self.rescale is not None:  # HF rescales in float64, then rounds to float32
            x = (x.double() * self.rescale).float()
        if self.mean is not None and self.std is not None:
            mean = torch.tensor(self.mean, device=x.device)[None, :, None, None]
            std = torch.tensor(self.std, device=x.device)[None, :, None, None]
            x = (x - mean) / std
        return x.to(dtype).contiguous()
