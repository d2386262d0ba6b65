"""The spec and the loader: :class:`ModelSpec` -> :func:`load_models` ->
:class:`LoadedModels`, and where the shipped world checkpoints (preset ``world``) are."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from evspec.loading.clips import ClipSizes
from evspec.loading.devices import (
    DTYPE_CHOICES, check_device, check_quant, check_quant_name, quiet_loading,
    resolve_device, resolve_dtype,
)

if TYPE_CHECKING:
    import torch

#: the preset name of the shipped world checkpoints (``assets/world/target`` and ``drafter``)
WORLD_SPEC = "world"
ASSETS = Path(__file__).parent.parent / "assets" / "world"
ASSETS_ENV = "EVSPEC_ASSETS"  # an assets folder holding world/ (tests point it elsewhere)


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
        check_quant_name(self.quant)
        check_fast_options(self.fast, self.compile, self.kernels)
        if self.quant == "4bit" and self.fast:
            raise ValueError("quant='4bit' runs on the dynamic path (the fast engine needs "
                             "16-bit weights): drop --fast / fast=True, or use quant='none'")

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
    dtype = resolve_dtype(spec.dtype, device if spec.target is not None else draft_device)
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
