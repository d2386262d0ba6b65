"""The one model loader: a :class:`ModelSpec` (which models, in which dtype, on which
devices, with which engine options) becomes :class:`LoadedModels` through
:func:`load_models`; clip files become requests sized by the loaded models' configs
(:class:`ClipSizes`, :func:`load_inputs`, :func:`make_request`).

Used by the CLI, the Python API, the demo, the benchmark harness and the trained-drafter
verbs (collect, train, eval), so every caller loads models the same way.  A model is a
preset name (``tiny-random``, ``7b``), ``world`` (the shipped world checkpoints) or a
local checkpoint folder; nothing is downloaded.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from evspec.models.request import Request

if TYPE_CHECKING:  # torch loads with the first model, not with this module
    import torch

#: the preset name of the shipped world checkpoints (``assets/world/target`` and ``drafter``)
WORLD_SPEC = "world"
ASSETS = Path(__file__).parent / "assets" / "world"
ASSETS_ENV = "EVSPEC_ASSETS"  # an assets folder holding world/ (tests point it elsewhere)

#: dtype names (with their short forms) -> the torch dtype's attribute name
_DTYPES = {"float32": "float32", "fp32": "float32", "bfloat16": "bfloat16", "bf16": "bfloat16",
           "float16": "float16", "fp16": "float16"}
DTYPE_CHOICES = ("auto", *_DTYPES)
QUANT_CHOICES = ("none", "4bit")
_DEVICE = re.compile(r"(cpu|meta|mps|cuda(:\d+)?)")


# -- where the shipped world checkpoints are ------------------------------------------------


def world_assets(assets: str | Path | None = None) -> Path:
    """The world asset folder: ``assets`` (a folder holding ``world/``), else
    ``$EVSPEC_ASSETS/world``, else the package's own ``evspec/assets/world``."""
    if assets is None and os.environ.get(ASSETS_ENV):
        assets = os.environ[ASSETS_ENV]
    return ASSETS if assets is None else Path(assets) / "world"


def world_available(assets: str | Path | None = None) -> bool:
    """Whether the shipped world models and clips are there."""
    root = world_assets(assets)
    files = (root / "manifest.json", root / "target" / "config.json",
             root / "drafter" / "config.json")
    return all(p.is_file() for p in files)


def resolve_model_spec(spec: str | Path, role: str) -> str | Path:
    """``world`` -> the shipped world checkpoint folder of ``role`` (``target`` or ``draft``,
    under ``$EVSPEC_ASSETS/world`` when that variable is set); any other spec unchanged."""
    if str(spec) != WORLD_SPEC:
        return spec
    folder = world_assets() / ("target" if role == "target" else "drafter")
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{folder}: the shipped world checkpoints are missing (preset "
                                "'world'); reinstall evspec or point EVSPEC_ASSETS at an assets "
                                "folder holding world/")
    return folder


def is_preset(spec: str) -> bool:
    """Whether ``spec`` names a preset (``world`` included) rather than a folder."""
    from evspec.models.presets.target import TARGET_PRESETS

    return spec == WORLD_SPEC or spec in TARGET_PRESETS


# -- devices, dtypes, threads ---------------------------------------------------------------


def check_device(device: str, option: str = "--device") -> None:
    """Refuse a string that names no device, saying what to pass instead."""
    if not isinstance(device, str) or (device != "auto" and not _DEVICE.fullmatch(device)):
        raise ValueError(f"{option} {device!r}: not a device: use auto, cpu, cuda or cuda:N")


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto`` (CUDA when available), ``cpu``, ``cuda`` or ``cuda:N``; anything else, or a
    GPU this machine lacks, is a ValueError saying what to pass instead."""
    import torch

    if isinstance(device, torch.device):
        return device
    check_device(device)
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available; use --device cpu")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        n = torch.cuda.device_count()
        raise ValueError(f"--device {device!r}: this machine has {n} GPU(s), "
                         f"cuda:0 .. cuda:{n - 1}")
    return dev


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """``auto`` = bfloat16 on CUDA, float32 elsewhere; else the named dtype."""
    import torch

    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if dtype not in _DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; choose auto, {', '.join(_DTYPES)}")
    return getattr(torch, _DTYPES[dtype])


def _check_quant_name(quant: str) -> None:
    if quant not in QUANT_CHOICES:
        raise ValueError(
            f"quant {quant!r} is not supported; choose one of {', '.join(QUANT_CHOICES)} "
            "(4bit = bitsandbytes NF4 weights for the LLaMA decoder, needs "
            "`pip install 'evspec[quant]'`)"
        )


def check_quant(quant: str, dtype: torch.dtype) -> None:
    """Validate a ``quant`` choice (and, for ``4bit``, that bitsandbytes is installed)
    before any model is built."""
    _check_quant_name(quant)
    if quant == "4bit":
        if not dtype.is_floating_point:
            raise ValueError("quant='4bit' computes in the model dtype, which must be "
                             f"floating; got {dtype}")
        from evspec.models.quant import import_bitsandbytes

        import_bitsandbytes()  # fail before a 7B model is built, saying how to install it


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
    import torch

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


# -- the spec and the loader ----------------------------------------------------------------


@dataclass(frozen=True)
class ModelSpec:
    """Which models to load and how.

    ``target``: Video-LLaVA as a preset (``tiny-random``, ``7b``), ``world`` or a local
    folder; None loads no target (only the draft model, e.g. to distil it with LoRA).
    ``draft_model``: EventGPT likewise; None loads none (:meth:`for_drafters` fills it in
    for the drafters that need one).  ``dtype``: ``auto`` = bfloat16 on CUDA, float32 on
    CPU; both models share it.  ``device``: ``auto`` = CUDA when available;
    ``target_device`` / ``draft_device`` place the two models apart (None = ``device``).
    ``seed``: of random preset weights (the draft model's is ``seed + 1``).  ``quant``:
    ``none`` or ``4bit`` (bitsandbytes NF4 for the LLaMA decoders; vision towers,
    projectors and LM heads stay in ``dtype``; the dynamic path only).  Engine options:
    ``fast`` (static KV cache, CUDA graphs on GPU), ``compile`` (with ``fast``,
    ``torch.compile`` the fast engine's layers), ``kernels`` (with ``fast``: ``torch`` or
    ``triton``), ``prefix_cache`` (reuse each clip's prefix KV across its questions).
    """

    target: str | None = "tiny-random"
    draft_model: str | None = None
    dtype: str = "auto"
    device: str = "auto"
    target_device: str | None = None
    draft_device: str | None = None
    seed: int = 0
    quant: str = "none"
    fast: bool = False
    compile: bool = False
    kernels: str = "torch"
    prefix_cache: bool = False

    def __post_init__(self) -> None:
        from evspec.models.fast.config import check_fast_options

        for name in ("target", "draft_model"):
            value = getattr(self, name)
            if isinstance(value, os.PathLike):
                object.__setattr__(self, name, os.fspath(value))
            elif value is not None and (not isinstance(value, str) or not value.strip()):
                raise ValueError(f"ModelSpec.{name} must be a preset name or a folder, "
                                 f"got {value!r}")
        if self.target is None and self.draft_model is None:
            raise ValueError("ModelSpec names no model: give target and/or draft_model")
        if self.dtype not in DTYPE_CHOICES:
            raise ValueError(f"--dtype must be one of auto, float32, bfloat16, float16, "
                             f"got {self.dtype!r}")
        for name in ("device", "target_device", "draft_device"):
            value = getattr(self, name)
            if value is not None:
                check_device(value)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ValueError(f"ModelSpec.seed must be an integer, got {self.seed!r}")
        _check_quant_name(self.quant)
        check_fast_options(self.fast, self.compile, self.kernels)

    @property
    def placement(self) -> tuple[str, str]:
        """(target device, draft device) as given: each defaults to ``device``."""
        return self.target_device or self.device, self.draft_device or self.device

    def for_drafters(self, drafters: Iterable[str]) -> ModelSpec:
        """This spec with the draft model ``drafters`` need: when none is named and one of
        them runs EventGPT, the target's preset (``world`` -> the world drafter); a folder
        target needs the draft model named."""
        from evspec.decoding.names import needs_draft_model

        drafters = tuple(drafters)
        if self.draft_model is not None or not any(map(needs_draft_model, drafters)):
            return self
        if self.target is None or not is_preset(self.target):
            from evspec.models.presets.target import TARGET_PRESETS

            wants = next(d for d in drafters if needs_draft_model(d))
            presets = ", ".join([WORLD_SPEC, *TARGET_PRESETS])
            raise ValueError(f"drafter {wants!r} needs a draft model: name an EventGPT folder "
                             f"or preset (--draft-model, draft_model=), or give a preset target "
                             f"({presets}), whose draft model is then used; got target "
                             f"{self.target!r}")
        return replace(self, draft_model=self.target)


@dataclass
class LoadedModels:
    """What :func:`load_models` made: the models (None where the spec named none), their
    devices and dtype."""

    spec: ModelSpec
    target: Any
    draft: Any
    device: torch.device
    draft_device: torch.device
    dtype: torch.dtype

    @property
    def sizes(self) -> ClipSizes:
        return ClipSizes.of(self.target, self.draft)


def _load_one(kind: str, spec: str, *, device: torch.device, dtype: torch.dtype, seed: int,
              quant: str):
    """One model from a preset name, ``world`` or a folder, quantised as asked."""
    if kind == "target":
        from evspec.models.target import VideoLlavaTarget as cls
    else:
        from evspec.models.eventgpt import EventGPT as cls

    with quiet_loading():
        model = cls.load(resolve_model_spec(spec, kind), device=device, dtype=dtype, seed=seed)
    if quant == "4bit":
        from evspec.models.quant import quantize_4bit

        quantize_4bit(model.model, compute_dtype=dtype)
    return model


def load_models(spec: ModelSpec, *, score_sizes: tuple[int, ...] = ()) -> LoadedModels:
    """Load the models ``spec`` names, each on its device (``spec.placement``), then turn on
    its engine options.  ``score_sizes``: the target's scores of γ + 1 tokens, compiled as
    they are with ``compile`` (``enable_fast(score_sizes=...)``).  Everything that can be
    checked is checked before the first model is built."""
    t_name, d_name = spec.placement
    device = resolve_device(t_name)
    draft_device = resolve_device(d_name)
    dtype = resolve_dtype(spec.dtype, device)
    check_quant(spec.quant, dtype)
    target = draft = None
    if spec.target is not None:
        target = _load_one("target", spec.target, device=device, dtype=dtype, seed=spec.seed,
                           quant=spec.quant)
    if spec.draft_model is not None:
        draft = _load_one("draft", spec.draft_model, device=draft_device, dtype=dtype,
                          seed=spec.seed + 1, quant=spec.quant)
    if spec.fast and spec.compile:
        from evspec.models.fast.compile_cache import enable_compile_cache

        enable_compile_cache()  # a second process reuses this one's compiled work
    for model in (target, draft):
        if model is not None and spec.fast:
            model.enable_fast(compile=spec.compile, kernels=spec.kernels,
                              score_sizes=score_sizes if model is target else ())
        if model is not None and spec.prefix_cache:
            model.enable_prefix_cache()
    return LoadedModels(spec, target, draft, device, draft_device, dtype)


# -- clip files -> requests -----------------------------------------------------------------


def is_world_model(model) -> bool:
    """Whether ``model`` (an EventGPT wrapper) was trained on the synthetic world, as its
    config declares (``EventGPTConfig.world``, the ``evspec_world`` key of config.json)."""
    return bool(getattr(getattr(model, "config", None), "world", False))


@dataclass(frozen=True)
class ClipSizes:
    """How a clip must look to the loaded models: ``num_frames`` video frames of
    ``frame_size``² pixels for the target, ``n_event_images`` event images of
    ``event_size``² for the draft model; ``world``: the draft model was trained on the
    synthetic world (event images of the whole clip on the sensor-sized canvas)."""

    num_frames: int = 8
    frame_size: int = 224
    n_event_images: int = 5
    event_size: int = 336
    world: bool = False

    @classmethod
    def of(cls, target, draft=None) -> ClipSizes:
        """The sizes the configs of ``target`` (and ``draft``, when given) declare."""
        out = cls(num_frames=int(target.num_frames),
                  frame_size=int(target.config.vision_config.image_size))
        if draft is None:
            return out
        return replace(out, n_event_images=int(draft.n_event_images),
                       event_size=int(draft.config.image_size), world=is_world_model(draft))


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
    sizes: ClipSizes,
    *,
    window_ms: float | None = None,
    seed: int = 0,
) -> Inputs:
    """Read a video (mp4 or frame folder) and an events file into model inputs of ``sizes``.

    ``"random"`` gives random images (useful with the random-weight presets).  Events may
    be a stream file (rendered as the EventGPT release does into ``sizes.n_event_images``
    images, each on a canvas sized from its own events; ``window_ms`` keeps only the first
    window of that length) or a folder of already rendered event images.  For a world
    drafter (``sizes.world``) the stream is rendered on its sensor-sized canvas over the
    whole clip, as the world models were trained, without the ~50 ms window warning.
    """
    vid = None
    if video == "random":
        vid = random_images(sizes.num_frames, sizes.frame_size, seed)
    elif video is not None:
        from evspec.data.video import read_video

        vid = read_video(video, num_frames=sizes.num_frames)

    ev = None
    if events == "random":
        ev = random_images(sizes.n_event_images, sizes.event_size, seed + 1)
    elif events is not None:
        path = Path(events)
        if path.is_dir():
            from evspec.data.video import read_video

            ev = read_video(path, num_frames=sizes.n_event_images)
        else:
            from evspec.data.clipio import load_events
            from evspec.data.render import render_canvas

            stream = load_events(path)
            if window_ms is not None:
                t0 = int(stream.t[0]) if len(stream) else 0
                stream = stream.window_time(t0, t0 + int(window_ms * 1000))
            canvas = "sensor" if sizes.world else "chunk"
            ev = render_canvas(stream, sizes.n_event_images, canvas, warn_window=not sizes.world)
    return Inputs(video=vid, event_images=ev)


def make_request(question: str, inputs: Inputs, *, clip_id: str | None = None,
                 qtype: str | None = None) -> Request:
    return Request(question=question, video=inputs.video, event_images=inputs.event_images,
                   clip_id=clip_id, qtype=qtype)
