"""Load models by name or folder and turn files into requests (used by the CLI, the demo
and the benchmark harness).  A *spec* is a preset name (``tiny-random``, ``world``,
``7b``) or a local checkpoint folder; nothing is downloaded."""

from __future__ import annotations

import os
import re
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from evspec.models.request import Request


_DEVICE = re.compile(r"(cpu|meta|mps|cuda(:\d+)?)")


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` (CUDA when available), ``cpu``, ``cuda`` or ``cuda:N``; anything else, or a
    GPU this machine lacks, is a ValueError saying what to pass instead."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not isinstance(device, str) or not _DEVICE.fullmatch(device):
        raise ValueError(f"--device {device!r}: not a device: use auto, cpu, cuda or cuda:N")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available; use --device cpu")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        n = torch.cuda.device_count()
        raise ValueError(f"--device {device!r}: this machine has {n} GPU(s), "
                         f"cuda:0 .. cuda:{n - 1}")
    return dev


_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
           "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if dtype not in _DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; choose auto, {', '.join(_DTYPES)}")
    return _DTYPES[dtype]


QUANT_CHOICES = ("none", "4bit")


def check_quant(quant: str, dtype: torch.dtype) -> None:
    """Validate a ``quant`` choice (and, for ``4bit``, that bitsandbytes is installed)
    before any model is built."""
    if quant not in QUANT_CHOICES:
        raise ValueError(
            f"quant {quant!r} is not supported; choose one of {', '.join(QUANT_CHOICES)} "
            "(4bit = bitsandbytes NF4 weights for the LLaMA decoder, needs "
            "`pip install 'evspec[quant]'`)"
        )
    if quant == "4bit":
        if not dtype.is_floating_point:
            raise ValueError(f"quant='4bit' computes in the model dtype, which must be floating; got {dtype}")
        from evspec.models.quant import import_bitsandbytes

        import_bitsandbytes()  # fail before a 7B model is built, saying how to install it


def _apply_quant(model: torch.nn.Module, quant: str, dtype: torch.dtype) -> None:
    if quant == "4bit":
        from evspec.models.quant import quantize_4bit

        quantize_4bit(model, compute_dtype=dtype)


#: the preset name of the shipped world checkpoints (``assets/world/target`` and ``drafter``)
WORLD_SPEC = "world"


def resolve_model_spec(spec: str | Path, role: str) -> str | Path:
    """``world`` -> the shipped world checkpoint folder of ``role`` (``target`` or ``draft``,
    under ``$EVSPEC_ASSETS/world`` when that variable is set); any other spec unchanged."""
    if str(spec) != WORLD_SPEC:
        return spec
    from evspec.demo import world_assets

    folder = world_assets() / ("target" if role == "target" else "drafter")
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{folder}: the shipped world checkpoints are missing (preset "
                                "'world'); reinstall evspec or point EVSPEC_ASSETS at an assets "
                                "folder holding world/")
    return folder


def default_threads(device: torch.device, cores: int | None = None) -> int | None:
    """CPU threads for torch on ``device``: 1 on a CPU with at most 2 cores (the small models'
    narrow linears run ~100x slower when two OpenMP threads contend for two shared cores),
    else ``None`` (torch's own choice)."""
    cores = os.cpu_count() if cores is None else cores
    if device.type == "cpu" and cores is not None and cores <= 2:
        return 1
    return None


def apply_threads(threads: int | None, device: torch.device) -> int:
    """Set torch's CPU thread count: ``threads``, else :func:`default_threads`; returns the
    count in force."""
    if threads is not None and threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    n = threads if threads is not None else default_threads(device)
    if n is not None and n != torch.get_num_threads():
        torch.set_num_threads(n)
    return torch.get_num_threads()


@contextmanager
def quiet_loading():
    """Hide transformers' "Loading weights" progress bar while a model loads (restored
    after)."""
    from transformers.utils import logging as hf_logging

    was = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was:
            hf_logging.enable_progress_bar()


def load_target(spec: str, *, device: torch.device, dtype: torch.dtype, seed: int = 0, quant: str = "none"):
    """Video-LLaVA from a preset name or a local folder.

    ``quant``: ``none`` (weights in ``dtype``) or ``4bit`` (the LLaMA decoder's linear
    layers in bitsandbytes NF4, computing in ``dtype``; the vision tower, projector and LM
    head stay in ``dtype``; see :func:`evspec.models.quant.quantize_4bit`).  A 4-bit model
    runs on the dynamic path only (``enable_fast`` refuses it).
    """
    from evspec.models.target import VideoLlavaTarget

    check_quant(quant, dtype)
    with quiet_loading():
        target = VideoLlavaTarget.load(resolve_model_spec(spec, "target"), device=device,
                                       dtype=dtype, seed=seed)
    _apply_quant(target.model, quant, dtype)
    return target


def load_eventgpt(spec: str, *, device: torch.device, dtype: torch.dtype, seed: int = 0, quant: str = "none"):
    """EventGPT from a preset name or a local folder (official release layout).

    ``quant`` as in :func:`load_target` (the CLIP tower, projector, adaptor and LM head
    stay in ``dtype``).
    """
    from evspec.models.eventgpt import EventGPT

    check_quant(quant, dtype)
    with quiet_loading():
        model = EventGPT.load(resolve_model_spec(spec, "draft"), device=device, dtype=dtype,
                              seed=seed)
    _apply_quant(model.model, quant, dtype)
    return model


@dataclass
class Inputs:
    """Raw model inputs of one clip: ``video`` ``[T, H, W, 3]``, ``event_images`` ``[n, H, W, 3]``."""

    video: np.ndarray | None
    event_images: np.ndarray | tuple[np.ndarray, ...] | None  # a tuple when sizes differ


def random_images(n: int, size: int, seed: int) -> np.ndarray:
    """``[n, size, size, 3]`` uint8 noise (for presets with random weights)."""
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def load_inputs(
    video: str | None,
    events: str | None,
    *,
    num_frames: int,
    n_event_images: int,
    image_size: int = 224,
    event_image_size: int = 336,
    window_ms: float | None = None,
    seed: int = 0,
    world: bool = False,
) -> Inputs:
    """Read a video (mp4 or frame folder) and an events file into model inputs.

    ``"random"`` gives random images (useful with the random-weight presets).  Events may
    be a stream file (rendered as the EventGPT release does into ``n_event_images`` images,
    each on a canvas sized from its own events;
    ``window_ms`` keeps only the first window of that length) or a folder of already
    rendered event images.  ``world=True`` (a drafter trained on the synthetic world, see
    :func:`is_world_model`) renders on the stream's sensor-sized canvas over the whole clip,
    as the world models were trained, without the ~50 ms window warning.
    """
    vid = None
    if video == "random":
        vid = random_images(num_frames, image_size, seed)
    elif video is not None:
        from evspec.data.video import read_video

        vid = read_video(video, num_frames=num_frames)

    ev = None
    if events == "random":
        ev = random_images(n_event_images, event_image_size, seed + 1)
    elif events is not None:
        path = Path(events)
        if path.is_dir():
            from evspec.data.video import read_video

            ev = read_video(path, num_frames=n_event_images)
        else:
            from evspec.data.clipio import load_events
            from evspec.data.render import render_canvas

            stream = load_events(path)
            if window_ms is not None:
                t0 = int(stream.t[0]) if len(stream) else 0
                stream = stream.window_time(t0, t0 + int(window_ms * 1000))
            canvas = "sensor" if world else "chunk"
            ev = render_canvas(stream, n_event_images, canvas, warn_window=not world)
    return Inputs(video=vid, event_images=ev)


def is_world_model(model) -> bool:
    """Whether ``model`` (an EventGPT wrapper) is one of the synthetic world's drafters: their
    CLIP tower is named ``evspec/world...-clip`` by the world presets."""
    tower = getattr(getattr(model, "config", None), "mm_visual_tower", "") or ""
    return isinstance(tower, str) and tower.startswith("evspec/world")


def make_request(question: str, inputs: Inputs, *, clip_id: str | None = None, qtype: str | None = None) -> Request:
    return Request(question=question, video=inputs.video, event_images=inputs.event_images,
                   clip_id=clip_id, qtype=qtype)
