"""The step core both training loops run (``world.loop.train_world_model`` and
``heads.train.train``): one optimiser step from a loss, and when a periodic action is due.

What differs between the tasks stays with them: the batch order (per step vs per epoch),
validation (greedy exact match vs offline top-1) and how a time budget ends the run.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch


def apply_gradients(
    loss: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    params: Sequence[torch.nn.Parameter],
    grad_clip: float,
    *,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    reduce: Callable[[Sequence[torch.nn.Parameter]], None] | None = None,
) -> None:
    """backward -> ``reduce`` (e.g. average over data-parallel replicas) -> clip the global
    gradient norm to ``grad_clip`` (0: no clip) -> optimiser step -> ``scheduler`` step ->
    gradients cleared."""
    loss.backward()
    if reduce is not None:
        reduce(params)
    if grad_clip:
        torch.nn.utils.clip_grad_norm_(params, grad_clip)
    optimizer.step()
    if scheduler is not None:
        scheduler.step()
    optimizer.zero_grad(set_to_none=True)


def due(step: int, every: int, last: bool = False) -> bool:
    """Whether an action run every ``every`` steps (and at the ``last`` step) is due after
    optimiser step ``step``."""
    return last or step % every == 0
