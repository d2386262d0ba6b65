"""LoRA on EventGPT's language model (PEFT, imported lazily: the ``lora`` extra), for
distilling EventGPT toward the target (``eventgpt-lora`` drafter).

Only the LLaMA decoder's projections get adapters (``model.layers.N.{self_attn,mlp}.*``);
the vision tower, projector and adaptor stay frozen, so training can start from the event
embeddings stored by ``collect``.  For drafting the adapters are merged into a *copy* of
EventGPT (the naive ``eventgpt`` drafter keeps its weights) and unwrapped to plain
``nn.Linear`` layers, so the decoding paths (fast engine included) see an ordinary model.
"""

from __future__ import annotations

import copy
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

PROJECTIONS: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
#: the PEFT adapter folder's files (``PeftModel.from_pretrained(eventgpt.model, folder)``)
PEFT_CONFIG_FILE = "adapter_config.json"
PEFT_WEIGHTS_FILE = "adapter_model.safetensors"


@dataclass(frozen=True)
class LoraSpec:
    """``rank`` r, scaling ``alpha`` / r, ``dropout`` on the adapter input, and which of
    the decoder's projections get an adapter (names from :data:`PROJECTIONS`)."""

    rank: int = 16
    alpha: float = 32.0
    dropout: float = 0.0
    target_modules: tuple[str, ...] = PROJECTIONS

    def __post_init__(self) -> None:
        if not isinstance(self.rank, int) or self.rank < 1:
            raise ValueError(f"LoraSpec.rank must be a positive integer, got {self.rank!r}")
        if self.alpha <= 0:
            raise ValueError(f"LoraSpec.alpha must be > 0, got {self.alpha}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"LoraSpec.dropout must be in [0, 1), got {self.dropout}")
        bad = [m for m in self.target_modules if m not in PROJECTIONS]
        if bad or not self.target_modules:
            raise ValueError(
                f"LoraSpec.target_modules {list(self.target_modules)}: choose a non-empty subset "
                f"of {list(PROJECTIONS)}"
            )

    def to_dict(self) -> dict:
        d = asdict(self)
        d["target_modules"] = list(self.target_modules)
        return d

    @classmethod
    def from_dict(cls, raw: dict) -> LoraSpec:
        raw = dict(raw)
        raw["target_modules"] = tuple(raw.get("target_modules", PROJECTIONS))
        return cls(**raw)


def _peft() -> Any:
    try:
        import peft
    except ModuleNotFoundError as exc:  # pragma: no cover - the lora extra is installed in CI
        raise ModuleNotFoundError(
            "LoRA needs the 'peft' package: pip install 'evspec[lora]'"
        ) from exc
    return peft


def _pattern(spec: LoraSpec) -> str:
    # full-match regex: decoder layers only (the CLIP tower also has q_proj/k_proj ...)
    return r"model\.layers\.\d+\.(self_attn|mlp)\.(" + "|".join(spec.target_modules) + ")"


def peft_config(spec: LoraSpec) -> Any:
    """``spec`` as a ``peft.LoraConfig`` (decoder projections only)."""
    return _peft().LoraConfig(
        r=spec.rank, lora_alpha=spec.alpha, lora_dropout=spec.dropout,
        target_modules=_pattern(spec), bias="none",
    )


def apply_lora(model: nn.Module, spec: LoraSpec) -> nn.Module:
    """Inject LoRA adapters into an :class:`~evspec.models.eventgpt.EventGPTModel` in place
    and freeze everything else; returns ``model``."""
    _peft().inject_adapter_in_model(peft_config(spec), model)
    n = 0
    for name, p in model.named_parameters():
        p.requires_grad = "lora_" in name
        n += int(p.requires_grad)
    if n == 0:
        raise ValueError("apply_lora: no decoder projection matched; is this an EventGPTModel?")
    return model


def lora_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The adapter weights only (small), as PEFT names them."""
    return {k: v.detach().clone().contiguous() for k, v in _peft().get_peft_model_state_dict(model).items()}


def save_peft_adapter(folder: Path, spec: LoraSpec, state: dict[str, torch.Tensor]) -> None:
    """Write ``state`` (:func:`lora_state_dict`'s names) as a PEFT adapter folder:
    ``adapter_config.json`` and ``adapter_model.safetensors``, which
    ``peft.PeftModel.from_pretrained(eventgpt.model, folder)`` loads."""
    from safetensors.torch import save_file

    from evspec.data.atomic import atomic_file, atomic_write_text

    body = peft_config(spec).to_dict()
    body = {k: sorted(v) if isinstance(v, set) else v for k, v in body.items()}
    with atomic_file(folder / PEFT_WEIGHTS_FILE) as tmp:
        # PEFT names an adapter weight from its PeftModel: base_model.model.<the module's name>
        save_file({f"base_model.model.{k}": v.detach().cpu().contiguous()
                   for k, v in state.items()}, str(tmp))
    atomic_write_text(folder / PEFT_CONFIG_FILE, json.dumps(body, indent=1) + "\n")


def load_lora_state(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load adapter weights into a model that :func:`apply_lora` prepared; raises naming
    the keys that did not match."""
    result = _peft().set_peft_model_state_dict(model, state)
    unexpected = list(getattr(result, "unexpected_keys", []) or [])
    if unexpected:
        raise ValueError(f"LoRA checkpoint has weights this model lacks: {unexpected[:5]}")


def merge_lora(model: nn.Module) -> nn.Module:
    """Fold every adapter into its base weight and put the plain ``nn.Linear`` back."""
    from peft.tuners.lora import LoraLayer

    for name, module in list(model.named_modules()):
        if isinstance(module, LoraLayer):
            module.merge()
            parent_name, _, child = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(parent, child, module.get_base_layer())
    return model


def distilled_eventgpt(eventgpt: Any, spec: LoraSpec, state: dict[str, torch.Tensor], *, copy_model: bool = True) -> Any:
    """An :class:`~evspec.models.eventgpt.EventGPT` with the LoRA ``state`` merged in.

    ``copy_model=True`` (default) leaves ``eventgpt`` untouched (the naive drafter may run
    in the same process); ``False`` merges in place and saves the memory of a copy.
    """
    from evspec.models.eventgpt import EventGPT

    net = copy.deepcopy(eventgpt.model) if copy_model else eventgpt.model
    apply_lora(net, spec)
    load_lora_state(net, {k: v.to(net.lm_head.weight.device) for k, v in state.items()})
    merge_lora(net)
    for p in net.parameters():
        p.requires_grad = False
    if not copy_model:
        return eventgpt
    return EventGPT(net, eventgpt.tokenizer, eventgpt.image_processor)
