"""Data-parallel training (``torchrun ... -m evspec train``) on the CPU with two gloo
processes: gradients are averaged, the replicas end identical, rank 0 alone writes."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from distributed_workers import average_worker, train_worker


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_gradients_are_averaged_over_ranks(tmp_path: Path) -> None:
    mp.spawn(average_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    assert [(tmp_path / f"rank{r}.ok").read_text() for r in range(2)] == ["True", "True"]


def test_two_replicas_train_as_one(collected, tmp_path: Path) -> None:
    from evspec.modules.checkpoint import load_checkpoint

    mp.spawn(train_worker, args=(2, _free_port(), str(collected), str(tmp_path), "target-head"),
             nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    assert ranks[0]["step"] == ranks[1]["step"] == 6
    for name, value in ranks[0]["state"].items():  # the same optimiser steps on every rank
        assert torch.equal(value, ranks[1]["state"][name]), name
    written = load_checkpoint(tmp_path / "run" / "last")
    for name, value in written.state.items():
        torch.testing.assert_close(value, ranks[0]["state"][name], rtol=0, atol=0)
    assert written.meta["step"] == 6


def test_a_time_budget_stops_every_rank_at_one_step(collected, tmp_path: Path) -> None:
    args = (2, _free_port(), str(collected), str(tmp_path), "target-head", 1.5)
    mp.spawn(train_worker, args=args, nprocs=2, join=True)  # a rank left behind would hang
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    assert 0 < ranks[0]["step"] == ranks[1]["step"] < 100_000
