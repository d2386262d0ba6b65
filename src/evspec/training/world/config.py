"""``WorldTrainConfig``: everything that decides one world-model training run (with the data
folder and the seed, it fixes the result)."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from evspec.training.config import config_keys

ROLES: tuple[str, ...] = ("target", "drafter")
AMP_MODES: tuple[str, ...] = ("auto", "bf16", "off")
PRESETS: tuple[str, ...] = ("world", "world-micro")


@dataclass
class WorldTrainConfig:
    """One training run of a world model.

    ``role``: ``"target"`` (Video-LLaVA architecture on 8 video frames, target-style answers)
    or ``"drafter"`` (EventGPT architecture on n = 5 event images, drafter-style answers).
    ``data``: a folder written by ``evspec world generate``; ``out``: the run folder
    (``model/``, ``train_state.pt``, ``train_log.json``, ``train_config.json``).
    ``preset``: model shapes (``world``, or ``world-micro`` for tests).

    Optimisation: AdamW (``lr``, ``betas``, ``weight_decay`` on matrices only), linear
    warm-up over ``warmup_steps`` then cosine decay to ``lr * min_lr_ratio`` at ``steps``;
    gradients clipped to ``grad_clip``.  ``amp``: ``auto`` = bf16 autocast on CUDA, fp32 on
    the CPU.  Loss is on the answer tokens and EOS only.

    Validation every ``eval_interval`` steps: loss over ``val_batches`` batches and greedy
    exact match on ``val_generate`` validation questions.  A checkpoint every
    ``checkpoint_interval`` steps and at the end.  ``time_budget_s``: after a few timed
    steps, lower ``steps`` so that the run ends within the budget (the chosen number is
    logged; pass it as ``steps`` to repeat the run exactly).  ``stop_at``: stop after that
    step as if interrupted (resume continues it).  ``workers``: processes that pre-decode
    the clips.  ``max_train_clips``: use only the first N training clips (0 = all).

    ``aux_weight``: weight of the training-only auxiliary heads' loss (dense per-patch
    labels from the scene specs: object shape, colour, centre, motion; see
    :mod:`evspec.training.world.aux_heads`); 0 trains on the answers alone.
    """

    role: str
    data: Path
    out: Path
    preset: str = "world"
    steps: int = 4000
    batch_size: int = 64
    lr: float = 1e-3
    min_lr_ratio: float = 0.05
    warmup_steps: int = 100
    betas: tuple[float, float] = (0.9, 0.98)
    weight_decay: float = 0.05
    grad_clip: float = 1.0
    eval_interval: int = 500
    val_batches: int = 4
    val_generate: int = 64
    checkpoint_interval: int = 1000
    log_interval: int = 50
    seed: int = 0
    device: str = "auto"
    amp: str = "auto"
    workers: int = 0
    time_budget_s: float | None = None
    stop_at: int | None = None
    max_train_clips: int = 0
    max_new_tokens: int = 48
    aux_weight: float = 1.0

    def __post_init__(self) -> None:
        self.data, self.out = Path(self.data), Path(self.out)
        self.betas = (float(self.betas[0]), float(self.betas[1]))
        if self.workers <= 0:
            self.workers = max(1, min(16, os.cpu_count() or 1))
        problems = []
        if self.role not in ROLES:
            problems.append(f"role = {self.role!r}: use 'target' or 'drafter'")
        if self.preset not in PRESETS:
            problems.append(f"preset = {self.preset!r}: use one of {PRESETS}")
        if self.amp not in AMP_MODES:
            problems.append(f"amp = {self.amp!r}: use one of {AMP_MODES}")
        for name in ("steps", "batch_size", "eval_interval", "checkpoint_interval", "log_interval",
                     "max_new_tokens"):
            if int(getattr(self, name)) < 1:
                problems.append(f"{name} = {getattr(self, name)} must be >= 1")
        for name in ("warmup_steps", "val_batches", "val_generate", "seed", "max_train_clips"):
            if int(getattr(self, name)) < 0:
                problems.append(f"{name} = {getattr(self, name)} must be >= 0")
        if not self.lr > 0:
            problems.append(f"lr = {self.lr} must be > 0 (1e-3 suits the world presets)")
        if not 0 <= self.min_lr_ratio <= 1:
            problems.append(f"min_lr_ratio = {self.min_lr_ratio} must be in [0, 1]")
        if not all(0 <= b < 1 for b in self.betas):
            problems.append(f"betas = {self.betas} must both be in [0, 1)")
        if self.weight_decay < 0 or self.grad_clip <= 0:
            problems.append(
                f"weight_decay = {self.weight_decay} must be >= 0 and grad_clip = "
                f"{self.grad_clip} > 0"
            )
        if not self.aux_weight >= 0:
            problems.append(f"aux_weight = {self.aux_weight} must be >= 0 (0 = no auxiliary heads)")
        if self.time_budget_s is not None and self.time_budget_s <= 0:
            problems.append(f"time_budget_s = {self.time_budget_s} must be > 0 (or None)")
        if self.stop_at is not None and not 1 <= self.stop_at <= self.steps:
            problems.append(f"stop_at = {self.stop_at} must be in [1, steps = {self.steps}]")
        if problems:
            raise ValueError("WorldTrainConfig: " + "; ".join(problems))

    @property
    def answer_style(self) -> str:
        """Which reference answers the role learns: ``target`` or ``drafter`` style."""
        return self.role

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["data"], d["out"] = str(self.data), str(self.out)
        d["betas"] = list(self.betas)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> WorldTrainConfig:
        d = config_keys(cls, d)
        if "betas" in d:
            d["betas"] = tuple(d["betas"])
        return cls(**d)
