"""Trained-module checkpoints: a folder with ``config.json`` (kind, module config, the
dims and target fingerprint it was trained against, training settings and history) and
``module.safetensors`` (the trainable weights only: heads reuse the target's frozen
``lm_head``/embedding, LoRA stores only its adapters; a LoRA folder is a PEFT adapter
folder too, ``peft.PeftModel.from_pretrained(eventgpt.model, folder)``).

The table of module kinds lives here: kind -> config class, network class, and the
drafter that decodes with it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from evspec.data.atomic import atomic_file, atomic_write_text
from evspec.models.safe_load import load_safetensors, read_json_object

from evspec.modules.adapter_base import HiddenAdapter
from evspec.modules.aligner import AlignerConfig, CrossModalAligner
from evspec.modules.attention_adapter import AttentionAdapter, AttentionAdapterConfig
from evspec.modules.bottleneck import BottleneckAdapter, BottleneckConfig
from evspec.modules.head import DraftHead, HeadConfig
from evspec.modules.lora import LoraSpec, save_peft_adapter
from evspec.modules.note_adapter import NoteAdapter, NoteAdapterConfig

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "module.safetensors"
CHECKPOINT_FORMAT = "evspec-module"

ADAPTER_KINDS: dict[str, tuple[type, type[HiddenAdapter]]] = {
    "note-adapter": (NoteAdapterConfig, NoteAdapter),
    "bottleneck": (BottleneckConfig, BottleneckAdapter),
    "attention": (AttentionAdapterConfig, AttentionAdapter),
    "aligner": (AlignerConfig, CrossModalAligner),
}
HEAD_KINDS: tuple[str, ...] = ("event-head", "target-head")
MODULE_KINDS: tuple[str, ...] = (*ADAPTER_KINDS, "lora", *HEAD_KINDS)


def drafter_for(kind: str) -> str:
    """The ``make_drafter`` name that decodes with a module of ``kind``."""
    if kind in ADAPTER_KINDS:
        return "eventgpt-adapter"
    if kind == "lora":
        return "eventgpt-lora"
    if kind in HEAD_KINDS:
        return kind
    raise ValueError(f"unknown module kind {kind!r}; choose one of {', '.join(MODULE_KINDS)}")


def build_module(kind: str, config: dict[str, Any]) -> torch.nn.Module | LoraSpec:
    """A fresh network of ``kind`` from its config dict (LoRA: the :class:`LoraSpec`)."""
    if kind in ADAPTER_KINDS:
        cfg_cls, net_cls = ADAPTER_KINDS[kind]
        return net_cls(cfg_cls(**config))
    if kind in HEAD_KINDS:
        return DraftHead(HeadConfig(**config))
    if kind == "lora":
        return LoraSpec.from_dict(config)
    raise ValueError(f"unknown module kind {kind!r}; choose one of {', '.join(MODULE_KINDS)}")


# -- fingerprints: does a checkpoint belong to this target? ----------------------------------


def fingerprint(weight: torch.Tensor) -> list[float]:
    """A dtype-robust summary of a weight matrix: shape, mean, std, and a few row sums."""
    w = weight.detach().float()
    rows = w[: min(4, w.shape[0])].sum(dim=1).tolist()
    return [float(s) for s in w.shape] + [float(w.mean()), float(w.std())] + [float(r) for r in rows]


def same_fingerprint(a: list[float], b: list[float], rtol: float = 2e-2) -> bool:
    if len(a) != len(b):
        return False
    scale = max(1e-6, max(abs(x) for x in a))
    return all(abs(x - y) <= rtol * max(abs(x), abs(y)) + 1e-4 * scale for x, y in zip(a, b))


# -- the folder --------------------------------------------------------------------------------


@dataclass
class Checkpoint:
    """A loaded checkpoint.  ``meta``: dims, fingerprint, training settings, history."""

    path: Path
    kind: str
    config: dict[str, Any]
    state: dict[str, torch.Tensor]
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def drafter(self) -> str:
        return drafter_for(self.kind)

    def build(self, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> torch.nn.Module:
        """The network with its weights, in eval mode (not for LoRA: see ``adapters.lora``)."""
        self._check_shapes()
        net = build_module(self.kind, self.config)
        if not isinstance(net, torch.nn.Module):
            raise TypeError(f"{self.path}: a {self.kind} checkpoint holds adapters for EventGPT; "
                            "load it with evspec.modules.lora.distilled_eventgpt")
        missing, unexpected = net.load_state_dict(self.state, strict=False)
        if missing or unexpected:
            raise ValueError(
                f"{self.path / WEIGHTS_FILE}: weights do not match the {self.kind} config "
                f"(missing {missing[:4]}, unexpected {unexpected[:4]})"
            )
        return net.to(device=device, dtype=dtype).eval()

    def _check_shapes(self) -> None:
        """Compare the config's weight shapes (built on the meta device: nothing allocated)
        with the file's, so a config asking for far more than the file holds is refused
        before the real module is built."""
        try:
            with torch.device("meta"):
                shell = build_module(self.kind, self.config)
        except (TypeError, ValueError, KeyError) as exc:
            raise ValueError(f"{self.path / CONFIG_FILE}: unusable {self.kind} config ({exc}); "
                             "re-save the module with `evspec train`") from None
        if not isinstance(shell, torch.nn.Module):
            return
        for name, want in shell.state_dict().items():
            have = self.state.get(name)
            if have is not None and tuple(have.shape) != tuple(want.shape):
                raise ValueError(
                    f"{self.path / WEIGHTS_FILE}: weight {name!r} has shape "
                    f"{tuple(have.shape)} but "
                    f"{CONFIG_FILE} implies {tuple(want.shape)}; the config and weights do not "
                    "belong together (re-save the module with `evspec train`)"
                )

    def check_target(self, lm_head_weight: torch.Tensor) -> None:
        """Raise when the target's ``lm_head`` is not the one this module was trained on."""
        saved = self.meta.get("target_fingerprint")
        if saved is None:
            return
        if not same_fingerprint(saved, fingerprint(lm_head_weight)):
            raise ValueError(
                f"{self.path}: this {self.kind} was trained against another target (its lm_head "
                "fingerprint differs); train one for this target with `evspec collect` + `evspec train`"
            )


def save_checkpoint(
    folder: str | Path, kind: str, config: dict[str, Any], state: dict[str, torch.Tensor], meta: dict[str, Any]
) -> Path:
    """Write ``folder/config.json`` and ``folder/module.safetensors`` (atomically)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    drafter_for(kind)  # validates the kind
    with atomic_file(folder / WEIGHTS_FILE) as tmp:
        save_file({k: v.detach().cpu().contiguous() for k, v in state.items()}, str(tmp))
    if kind == "lora":  # also a PEFT adapter folder
        save_peft_adapter(folder, LoraSpec.from_dict(config), state)
    body = {"format": CHECKPOINT_FORMAT, "kind": kind, "drafter": drafter_for(kind), "config": config, **meta}
    atomic_write_text(folder / CONFIG_FILE, json.dumps(body, indent=1) + "\n")
    return folder


def load_checkpoint(folder: str | Path) -> Checkpoint:
    """Read a checkpoint folder; errors name the file and what is wrong."""
    folder = Path(folder)
    cfg_path, w_path = folder / CONFIG_FILE, folder / WEIGHTS_FILE
    if not cfg_path.is_file() or not w_path.is_file():
        raise FileNotFoundError(
            f"{folder}: not a module checkpoint (needs {CONFIG_FILE} and {WEIGHTS_FILE}; "
            "train one with `evspec train`)"
        )
    body = read_json_object(cfg_path, "re-save the module with `evspec train`")
    if body.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{cfg_path}: format {body.get('format')!r}, expected {CHECKPOINT_FORMAT!r}")
    kind = body.get("kind")
    if kind not in MODULE_KINDS:
        raise ValueError(f"{cfg_path}: kind {kind!r}; expected one of {', '.join(MODULE_KINDS)}")
    if not isinstance(body.get("config"), dict):
        raise ValueError(f"{cfg_path}: 'config' must be an object of the module's settings; "
                         "re-save the module with `evspec train`")
    meta = {k: v for k, v in body.items() if k not in ("format", "kind", "drafter", "config")}
    state = load_safetensors(w_path, "re-save the module with `evspec train`")
    return Checkpoint(folder, kind, dict(body["config"]), state, meta)
