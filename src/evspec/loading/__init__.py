"""The one model loader: a :class:`ModelSpec` (which models, in which dtype, on which
devices, with which engine options) becomes :class:`LoadedModels` through
:func:`load_models`; clip files become requests sized by the loaded models' configs
(:class:`ClipSizes`, :func:`load_inputs`, :func:`make_request`).

Used by the CLI, the Python API, the demo, the benchmark harness and the trained-drafter
verbs (collect, train, eval), so every caller loads models the same way.  A model is a
preset name (``tiny-random``, ``7b``), ``world`` (the shipped world checkpoints) or a
local checkpoint folder; nothing is downloaded.
"""

from evspec.loading.clips import (
    ClipSizes, Inputs, is_world_model, load_inputs, make_request, random_images,
)
from evspec.loading.devices import (
    DTYPE_CHOICES, QUANT_CHOICES, apply_threads, check_device, check_quant, default_threads,
    quiet_loading, resolve_device, resolve_dtype,
)
from evspec.loading.models import (
    ASSETS, ASSETS_ENV, WORLD_SPEC, LoadedModels, ModelSpec, is_preset, load_models,
    resolve_model_spec, world_assets, world_available,
)

__all__ = [
    "ASSETS", "ASSETS_ENV", "DTYPE_CHOICES", "QUANT_CHOICES", "WORLD_SPEC", "ClipSizes",
    "Inputs", "LoadedModels", "ModelSpec", "apply_threads", "check_device", "check_quant",
    "default_threads", "is_preset", "is_world_model", "load_inputs", "load_models",
    "make_request", "quiet_loading", "random_images", "resolve_device", "resolve_dtype",
    "resolve_model_spec", "world_assets", "world_available",
]
