"""The training checkpoint every task writes: its weights plus ``train_state.pt``, and the
one resume rule.

A run folder ``out`` holds::

    train_config.json   the run's config (the world: with the step count actually planned)
    train_state.pt      TrainState: optimiser, LR schedule, step, planned steps, RNG states
    model/ | last/      the weights: a world model in its release layout (``model/``, written
                        here) or a drafter module folder (``last/`` and ``best/``,
                        ``evspec.modules.checkpoint``)
    train_log.json | history.jsonl   loss curve, validation, timings

Resuming continues from the step in ``train_state.pt`` with the optimiser (and schedule)
state, the same batch order and the same settings: :func:`refuse_other_settings` names every
setting that differs from the run's, except the ones a task declares resumable (its
length, intervals, budget).  Folders and files are replaced atomically (written beside,
then renamed), so an interrupted save never leaves a half-written checkpoint.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Iterable

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
    scheduler: dict[str, Any] = field(default_factory=dict)  # empty: the LR is set per step
    rng_cpu: torch.Tensor | None = None
    rng_cuda: list[torch.Tensor] = field(default_factory=list)
    aux: dict[str, Any] | None = None  # the auxiliary heads' weights (training only)

    @classmethod
    def capture(cls, step: int, planned_steps: int, optimizer: torch.optim.Optimizer, *,
                scheduler: Any = None, cuda: bool = False,
                aux: dict[str, Any] | None = None) -> TrainState:
        """The state now: ``optimizer``'s (and ``scheduler``'s) state and the torch RNGs
        (the CUDA ones with ``cuda``)."""
        cuda_rng = torch.cuda.get_rng_state_all() if cuda else []
        return cls(step, planned_steps, optimizer.state_dict(),
                   {} if scheduler is None else scheduler.state_dict(),
                   torch.get_rng_state(), cuda_rng, aux)

    def restore_rng(self, cuda: bool = False) -> None:
        """Set the torch RNGs (the CUDA ones with ``cuda``) to the saved states."""
        if self.rng_cpu is not None:
            torch.set_rng_state(self.rng_cpu)
        if cuda and self.rng_cuda:
            torch.cuda.set_rng_state_all(self.rng_cuda)


def save_checkpoint(out: Path, wrapper: Any, state: TrainState) -> Path:
    """Write ``out/model`` (a model's ``save_pretrained``, atomically) and
    ``out/train_state.pt``."""
    out.mkdir(parents=True, exist_ok=True)
    final, tmp, old = out / MODEL_DIR, out / f"{MODEL_DIR}.tmp", out / f"{MODEL_DIR}.old"
    for p in (tmp, old):
        shutil.rmtree(p, ignore_errors=True)
    wrapper.save_pretrained(tmp)
    if final.exists():
        final.rename(old)
    tmp.rename(final)
    shutil.rmtree(old, ignore_errors=True)
    save_state(out, state)
    return final


def save_state(out: Path, state: TrainState) -> Path:
    """Write ``out/train_state.pt`` (atomically)."""
    out.mkdir(parents=True, exist_ok=True)
    torch.save({f.name: getattr(state, f.name) for f in fields(state)}, out / f"{STATE_FILE}.tmp")
    (out / f"{STATE_FILE}.tmp").replace(out / STATE_FILE)
    return out / STATE_FILE


def load_state(out: Path, fix: str = "delete it and drop --resume to start the run again"
               ) -> TrainState:
    """``out/train_state.pt``; errors name the file and say how to go on (``fix``)."""
    path = out / STATE_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{out}: no checkpoint to resume ({STATE_FILE} is written at "
                                f"each checkpoint); {fix}")
    # tensors and plain containers only: a pickled callable in the file is refused unrun
    raw = load_torch_state(path, fix)
    if not isinstance(raw, dict) or not {"step", "optimizer"} <= raw.keys():
        raise ValueError(f"{path}: not an evspec training state (no step/optimizer); {fix}")
    return TrainState(
        step=int(raw["step"]),
        planned_steps=int(raw.get("planned_steps", raw["step"])),
        optimizer=raw["optimizer"],
        scheduler=raw.get("scheduler") or {},
        rng_cpu=raw.get("rng_cpu"),
        rng_cuda=list(raw.get("rng_cuda") or []),
        aux=raw.get("aux"),
    )


def refuse_other_settings(ours: dict[str, Any], theirs: dict[str, Any] | None,
                          resumable: Iterable[str], out: Path, fix: str) -> None:
    """The resume rule: raise, naming each, when settings other than ``resumable`` ones
    differ from the run's (``theirs``; keys it lacks are taken as matching)."""
    if not theirs:
        return
    keep = set(resumable)
    differ = sorted(k for k in ours if k not in keep and k in theirs and theirs[k] != ours[k])
    if differ:
        raise ValueError(
            f"{out} holds a run with other settings: "
            + ", ".join(f"{k} = {ours[k]!r} (the run's: {theirs[k]!r})" for k in differ)
            + f"; {fix}"
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
