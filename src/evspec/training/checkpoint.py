"""Run-folder checkpoints: the model in its release layout plus ``train_state.pt``.

Layout of a run folder ``out``::

    train_config.json   the WorldTrainConfig (with the step count actually planned)
    model/              the latest weights (wrapper.save_pretrained: HF / EventGPT layout)
    train_state.pt      optimiser, LR schedule, step, planned steps, torch RNG states
    train_log.json      loss curve, validation, timings

The model folder is replaced atomically (written beside it, then renamed), so an
interrupted save never leaves a half-written checkpoint.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from evspec.data.atomic import atomic_write_text
from evspec.models.safe_load import load_torch_state

MODEL_DIR = "model"
STATE_FILE = "train_state.pt"
LOG_FILE = "train_log.json"
CONFIG_FILE = "train_config.json"


@dataclass
class TrainState:
    """What resuming needs besides the weights."""

    step: int  # optimiser steps done
    planned_steps: int
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    rng_cpu: torch.Tensor
    rng_cuda: list[torch.Tensor]
    aux: dict[str, Any] | None = None  # the auxiliary heads' weights (training only)


def save_checkpoint(out: Path, wrapper: Any, state: TrainState) -> Path:
    """Write ``out/model`` (atomically) and ``out/train_state.pt``."""
    out.mkdir(parents=True, exist_ok=True)
    final, tmp, old = out / MODEL_DIR, out / f"{MODEL_DIR}.tmp", out / f"{MODEL_DIR}.old"
    for p in (tmp, old):
        shutil.rmtree(p, ignore_errors=True)
    wrapper.save_pretrained(tmp)
    if final.exists():
        final.rename(old)
    tmp.rename(final)
    shutil.rmtree(old, ignore_errors=True)
    body = {
        "step": state.step,
        "planned_steps": state.planned_steps,
        "optimizer": state.optimizer,
        "scheduler": state.scheduler,
        "rng_cpu": state.rng_cpu,
        "rng_cuda": state.rng_cuda,
        "aux": state.aux,
    }
    torch.save(body, out / f"{STATE_FILE}.tmp")
    (out / f"{STATE_FILE}.tmp").replace(out / STATE_FILE)
    return final


def load_state(out: Path) -> TrainState:
    """``out/train_state.pt``; a clear error when the run folder has none."""
    path = out / STATE_FILE
    if not path.is_file() or not (out / MODEL_DIR / "config.json").is_file():
        raise FileNotFoundError(
            f"{out}: no checkpoint to resume ({STATE_FILE} and {MODEL_DIR}/ are written at "
            "each checkpoint); drop --resume to start a new run"
        )
    # tensors and plain containers only: a pickled callable in the file is refused unrun
    raw = load_torch_state(path, "delete it and drop --resume to start the run again")
    if not isinstance(raw, dict) or not {"step", "planned_steps", "optimizer"} <= raw.keys():
        raise ValueError(f"{path}: not an evspec training state (no step/optimizer); drop --resume")
    return TrainState(
        step=int(raw["step"]),
        planned_steps=int(raw["planned_steps"]),
        optimizer=raw["optimizer"],
        scheduler=raw["scheduler"],
        rng_cpu=raw["rng_cpu"],
        rng_cuda=list(raw["rng_cuda"]),
        aux=raw.get("aux"),
    )


def write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=1) + "\n")


def read_json(path: Path) -> Any:
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: not valid JSON ({exc}): restore it, or start a new run "
                         "in another --out") from None
