"""Optional 4-bit weights (bitsandbytes NF4/FP4), the setting the research ran both 7B
models in (on one 24 GB GPU).

:func:`quantize_4bit` swaps a built model's ``nn.Linear`` layers for
``bitsandbytes.nn.Linear4bit`` layers holding the *same* weights, quantized right there
(on the weight's own device: CUDA, or the CPU when bitsandbytes' CPU backend runs).  The
settings are transformers' ``BitsAndBytesConfig`` (what ``from_pretrained(
quantization_config=...)`` takes); each layer becomes an empty ``Linear4bit`` that
receives its weight as a ``bitsandbytes.nn.Params4bit``, which is what transformers'
loader does per tensor.  We do not call transformers' ``replace_with_bnb_linear``: that
module binds bitsandbytes only when the package's install metadata is found (not so for
a bitsandbytes folder on ``PYTHONPATH``) and its signature changes between releases.
Working on an already-built model covers both our preset-built (random-weight) models and
the folder-loaded checkpoints alike; a folder load therefore peaks at the 16-bit size of
one model before quantizing (load the models one after the other on a 24 GB GPU).

What is quantized (the usual LLaVA 4-bit recipe): the LLaMA decoder's linear layers
(attention q/k/v/o, MLP gate/up/down).  What stays in 16-bit (:data:`KEEP_16BIT`): the
LM head (``lm_head``), the token embeddings (an ``nn.Embedding``, never touched), the
norms, and the multimodal glue: Video-LLaVA's ``multi_modal_projector``, EventGPT's
``visual_projector`` and ``feature_adaptor``.  The vision towers (:data:`VISION_TOWERS`:
Video-LLaVA's ``video_tower``/``image_tower``, EventGPT's ``visual_tower``) stay 16-bit
by default; pass ``skip=KEEP_16BIT`` to quantize them as well.

bitsandbytes is an optional dependency (``pip install 'evspec[quant]'``); nothing here
imports it before :func:`quantize_4bit` is called.  Quantized models cannot use the fast
engine (``CausalLMWrapper.enable_fast`` refuses them: it fuses 16-bit weight matrices).
"""

from __future__ import annotations

import importlib
import sys
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:
    from transformers import BitsAndBytesConfig

__all__ = [
    "DEFAULT_SKIP",
    "KEEP_16BIT",
    "QUANT_TYPES",
    "VISION_TOWERS",
    "QuantReport",
    "import_bitsandbytes",
    "is_4bit",
    "quant_report",
    "quantize_4bit",
]

QUANT_TYPES = ("nf4", "fp4")
#: module-name components kept in 16-bit always (LM head and the multimodal projectors)
KEEP_16BIT: tuple[str, ...] = ("lm_head", "multi_modal_projector", "visual_projector", "feature_adaptor")
#: the vision towers of Video-LLaVA (video, image) and EventGPT
VISION_TOWERS: tuple[str, ...] = ("video_tower", "image_tower", "visual_tower")
DEFAULT_SKIP: tuple[str, ...] = KEEP_16BIT + VISION_TOWERS
_BLOCKSIZE = 64  # bitsandbytes' default quantization block (one absmax per 64 weights)
_INSTALL_HINT = "pip install 'evspec[quant]'"


@dataclass(frozen=True)
class QuantReport:
    """What a model holds after :func:`quantize_4bit` (or any model, via :func:`quant_report`).

    ``replaced``: names of the ``Linear4bit`` layers; ``kept``: names of the ``nn.Linear``
    layers still in 16/32-bit; ``weight_bytes``: bytes of all parameters and buffers, the
    4-bit layers counted as packed data plus their quantization statistics.
    """

    quant_type: str | None
    compute_dtype: torch.dtype | None
    replaced: tuple[str, ...]
    kept: tuple[str, ...]
    weight_bytes: int

    @property
    def quantized(self) -> bool:
        return bool(self.replaced)

    def to_dict(self) -> dict:
        return {
            "quant_type": self.quant_type,
            "compute_dtype": None if self.compute_dtype is None else str(self.compute_dtype),
            "replaced": len(self.replaced),
            "kept": list(self.kept),
            "weight_gib": self.weight_bytes / 2**30,
        }


def import_bitsandbytes() -> ModuleType:
    """``bitsandbytes``, or an ``ImportError`` that says how to install it."""
    try:
        return importlib.import_module("bitsandbytes")
    except ImportError as err:
        raise ImportError(
            f"4-bit weights need bitsandbytes, which is not installed: {_INSTALL_HINT} "
            f"(or `pip install bitsandbytes>=0.45`); without it use quant='none' ({err})"
        ) from err


def _linear4bit_class() -> type | None:
    """bitsandbytes' ``Linear4bit`` when bitsandbytes is already imported (a model cannot
    hold one otherwise), else None: checking never imports it."""
    bnb = sys.modules.get("bitsandbytes")
    nn_mod = getattr(bnb, "nn", None) if bnb is not None else None
    return getattr(nn_mod, "Linear4bit", None)


def is_4bit(module: nn.Module) -> bool:
    """Whether ``module`` contains any bitsandbytes ``Linear4bit`` layer."""
    cls = _linear4bit_class()
    return cls is not None and any(isinstance(m, cls) for m in module.modules())


def _skipped(name: str, skip: tuple[str, ...]) -> bool:
    """``name`` (dotted) has one of ``skip`` as a whole component run (``lm_head``,
    ``visual_tower``, or a dotted path such as ``model.layers.0``)."""
    padded = f".{name}."
    return any(f".{s.strip('.')}." in padded for s in skip)


def _tensor_bytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def _state_bytes(state: object) -> int:
    """Bytes of a bitsandbytes QuantState's tensors (absmax, code; nested state too)."""
    total = 0
    for value in vars(state).values():
        if isinstance(value, torch.Tensor):
            total += _tensor_bytes(value)
        elif type(value).__name__ == "QuantState":
            total += _state_bytes(value)
    return total


def quant_report(module: nn.Module) -> QuantReport:
    """Inspect ``module``: which linear layers are 4-bit, which are not, and its bytes."""
    cls = _linear4bit_class()
    replaced, kept = [], []
    quant_type = compute_dtype = None
    for name, m in module.named_modules():
        if cls is not None and isinstance(m, cls):
            replaced.append(name)
            quant_type = getattr(m.weight, "quant_type", quant_type)
            compute_dtype = m.compute_dtype
        elif isinstance(m, nn.Linear):
            kept.append(name)
    total = sum(_tensor_bytes(p) for p in module.parameters())
    total += sum(_tensor_bytes(b) for b in module.buffers())
    for name in replaced:
        state = getattr(module.get_submodule(name).weight, "quant_state", None)
        if state is not None:
            total += _state_bytes(state)
    return QuantReport(quant_type, compute_dtype, tuple(replaced), tuple(kept), total)


def _check_backend(bnb: ModuleType, device: torch.device, cfg: BitsAndBytesConfig) -> None:
    """Quantize and run one small 4-bit layer on ``device``; a clear error when this
    bitsandbytes build cannot (e.g. no CPU or no CUDA backend for this torch)."""
    try:
        with torch.inference_mode():
            layer = bnb.nn.Linear4bit(
                _BLOCKSIZE, _BLOCKSIZE, bias=False, compute_dtype=cfg.bnb_4bit_compute_dtype,
                quant_type=cfg.bnb_4bit_quant_type, device="meta",
            )
            weight = torch.randn(_BLOCKSIZE, _BLOCKSIZE, device=device)  # [64, 64]
            layer.weight = bnb.nn.Params4bit(
                weight.to(cfg.bnb_4bit_compute_dtype), requires_grad=False,
                quant_type=cfg.bnb_4bit_quant_type,
                compress_statistics=cfg.bnb_4bit_use_double_quant,
            ).to(device)
            x = torch.randn(2, _BLOCKSIZE, device=device, dtype=cfg.bnb_4bit_compute_dtype)  # [2, 64]
            out = layer(x)  # [2, 64]
            if out.shape != (2, _BLOCKSIZE) or not torch.isfinite(out).all():
                raise RuntimeError(f"a 4-bit test layer returned {tuple(out.shape)} / non-finite values")
    except (RuntimeError, NotImplementedError, ValueError, TypeError, AttributeError) as err:
        where = "on the CPU" if device.type == "cpu" else f"on {device}"
        raise RuntimeError(
            f"bitsandbytes {getattr(bnb, '__version__', '?')} cannot run 4-bit layers {where} "
            f"with torch {torch.__version__} ({type(err).__name__}: {err}); run on a CUDA GPU "
            "(--device cuda), upgrade bitsandbytes (>= 0.45 has CPU kernels), or use quant='none'"
        ) from err


def _config(compute_dtype: torch.dtype, quant_type: str, double_quant: bool) -> BitsAndBytesConfig:
    """transformers' ``BitsAndBytesConfig`` for these settings, validated with our wording."""
    from transformers import BitsAndBytesConfig

    if quant_type not in QUANT_TYPES:
        raise ValueError(f"quant_type {quant_type!r} is not supported; choose one of {', '.join(QUANT_TYPES)}")
    if not isinstance(compute_dtype, torch.dtype) or not compute_dtype.is_floating_point:
        raise ValueError(
            f"compute_dtype must be a floating torch dtype (torch.bfloat16 on GPUs, "
            f"torch.float32 on the CPU), got {compute_dtype!r}"
        )
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_compute_dtype=compute_dtype,
        bnb_4bit_quant_type=quant_type,
        bnb_4bit_use_double_quant=double_quant,
    )


@torch.no_grad()
def quantize_4bit(
    module: nn.Module,
    *,
    compute_dtype: torch.dtype,
    quant_type: str = "nf4",
    skip: tuple[str, ...] = DEFAULT_SKIP,
    double_quant: bool = True,
) -> QuantReport:
    """Replace ``module``'s ``nn.Linear`` layers, in place, by bitsandbytes ``Linear4bit``
    layers holding the same weights quantized to 4 bits (``quant_type`` ``nf4`` or
    ``fp4``; ``double_quant`` also quantizes the per-block scales, as QLoRA does).

    ``compute_dtype``: the dtype the 4-bit layers dequantize to and multiply in (the
    model's own dtype: bf16 on GPUs, float32 on the CPU).  ``skip``: module-name
    components (or dotted paths) left in 16-bit; the default :data:`DEFAULT_SKIP` keeps the
    LM head, the projector/adaptor and the vision towers, so only the LLaMA decoder is
    quantized; ``skip=KEEP_16BIT`` quantizes the vision towers too.  Biases stay in
    their dtype.

    Weights are quantized on the device they are on; a model on the ``meta`` device, or
    one already in 4-bit, is refused.  Raises ``ImportError`` (how to install) without
    bitsandbytes and ``RuntimeError`` when its kernels cannot run on that device.
    Returns the :class:`QuantReport` of the result.
    """
    config = _config(compute_dtype, quant_type, double_quant)
    skip = tuple(skip)
    if any(not isinstance(s, str) or not s.strip(".") for s in skip):
        raise ValueError(f"skip must hold non-empty module names (e.g. 'lm_head'), got {skip!r}")
    bnb = import_bitsandbytes()
    if is_4bit(module):
        raise ValueError(f"{type(module).__name__} is already in 4-bit; quantize a 16-bit model")

    # 1. choose: the plain linear layers not under a skipped name
    linears = {n: m for n, m in module.named_modules() if type(m) is nn.Linear}
    chosen = {n: m for n, m in linears.items() if not _skipped(n, skip)}
    if not chosen:
        raise ValueError(
            f"{type(module).__name__} has no nn.Linear layer outside skip={skip!r}; nothing to quantize"
        )
    devices = {m.weight.device for m in chosen.values()}
    if any(d.type == "meta" for d in devices):
        raise ValueError("the model's weights are on the meta device; build or load real weights first")
    for device in devices:
        _check_backend(bnb, device, config)

    # 2. swap each layer for a Linear4bit holding its weight: Params4bit(...).to(device)
    #    quantizes it there (what transformers' loader does per tensor); the bias is kept.
    for name, old in chosen.items():
        weight = old.weight.data  # [out, in]
        new = bnb.nn.Linear4bit(
            old.in_features,
            old.out_features,
            bias=old.bias is not None,
            compute_dtype=config.bnb_4bit_compute_dtype,
            compress_statistics=config.bnb_4bit_use_double_quant,
            quant_type=config.bnb_4bit_quant_type,
            quant_storage=config.bnb_4bit_quant_storage,
            device="meta",  # empty shell: no 16-bit copy is allocated
        )
        new.weight = bnb.nn.Params4bit(
            weight.to(compute_dtype),
            requires_grad=False,
            quant_type=config.bnb_4bit_quant_type,
            compress_statistics=config.bnb_4bit_use_double_quant,
            quant_storage=config.bnb_4bit_quant_storage,
            module=new,
        ).to(weight.device)
        new.bias = None if old.bias is None else nn.Parameter(old.bias.data, requires_grad=False)
        new.train(old.training)
        module.set_submodule(name, new)
        old.weight = None  # drop the 16-bit copy now, not at the end (peak memory)
    return quant_report(module)
