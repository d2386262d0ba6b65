"""Worker functions of the data-parallel tests, run in spawned processes (gloo, CPU)."""

from __future__ import annotations

import os
from pathlib import Path


def _join(rank: int, world: int, port: int) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world),
                      RANK=str(rank), LOCAL_RANK=str(rank))


def average_worker(rank: int, world: int, port: int, out: str) -> None:
    """Each rank takes the gradient of a toy model on its own input; after averaging, every
    rank must hold the mean of all ranks' gradients (computed here for every rank)."""
    import torch

    from evspec.training.heads.distributed import DataParallel

    _join(rank, world, port)
    dp = DataParallel.from_env(torch.device("cpu"))

    def grads(r: int) -> list[torch.Tensor]:
        torch.manual_seed(0)
        model = torch.nn.Linear(3, 2)
        x = torch.arange(6.0).view(2, 3) * (r + 1)
        model(x).square().sum().backward()
        return [p.grad.clone() for p in model.parameters()], model

    want = [sum(g) / world for g in zip(*(grads(r)[0] for r in range(world)))]
    _, model = grads(rank)
    unused = torch.nn.Parameter(torch.ones(2))  # no gradient on any rank: joins as zeros
    dp.average_gradients([*model.parameters(), unused])
    ok = all(torch.allclose(p.grad, w) for p, w in zip(model.parameters(), want))
    ok = ok and torch.equal(unused.grad, torch.zeros(2))
    ok = ok and dp.max(float(rank), torch.device("cpu")) == world - 1
    Path(out, f"rank{rank}.ok").write_text(str(ok))
    dp.close()


def train_worker(
    rank: int, world: int, port: int, data: str, out: str, kind: str, budget: float | None = None
) -> None:
    """``train`` under a 2-process group (``budget``: a time budget in seconds, with more
    steps than fit in it); each rank saves its final module state."""
    from dataclasses import replace

    import torch

    import evspec.training.heads.train as train_mod
    from heads_helpers import train_config

    _join(rank, world, port)
    tasks = []
    make_task = train_mod.make_task

    def capture(*args, **kwargs):
        task = make_task(*args, **kwargs)
        tasks.append(task)
        return task

    train_mod.make_task = capture
    cfg = train_config(kind, steps=6)
    if budget is not None:
        cfg = replace(cfg, steps=100_000, eval_every=100_000, save_every=100_000,
                      time_budget_s=budget)
    result = train_mod.train(cfg, data, Path(out) / "run", device="cpu", progress=False)
    state = {k: v.detach().clone() for k, v in tasks[0].state_dict().items()}
    torch.save({"state": state, "step": result.steps}, Path(out) / f"rank{rank}.pt")
