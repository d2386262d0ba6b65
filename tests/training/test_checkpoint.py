"""The one training state and resume rule every task uses."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from evspec.training.checkpoint import (
    STATE_FILE, TrainState, load_state, refuse_other_settings, save_state,
)


def test_state_round_trips_and_restores_the_rng(tmp_path: Path) -> None:
    net = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    net(torch.randn(4, 3)).sum().backward()
    opt.step()
    torch.manual_seed(11)
    save_state(tmp_path, TrainState.capture(7, 20, opt))
    expected = torch.rand(3)
    state = load_state(tmp_path)
    assert (state.step, state.planned_steps, state.scheduler) == (7, 20, {})
    state.restore_rng()
    assert torch.equal(torch.rand(3), expected)
    fresh = torch.optim.AdamW(torch.nn.Linear(3, 2).parameters(), lr=1e-3)
    fresh.load_state_dict(state.optimizer)
    assert fresh.state_dict()["state"][0]["step"] == opt.state_dict()["state"][0]["step"]


def test_a_state_of_step_and_optimizer_only_still_loads(tmp_path: Path) -> None:
    opt = torch.optim.AdamW(torch.nn.Linear(2, 2).parameters())
    torch.save({"optimizer": opt.state_dict(), "step": 3}, tmp_path / STATE_FILE)
    state = load_state(tmp_path)
    assert (state.step, state.planned_steps, state.rng_cpu) == (3, 3, None)
    state.restore_rng()  # nothing saved: nothing changes


def test_missing_or_foreign_states_say_how_to_go_on(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no checkpoint to resume.*start over"):
        load_state(tmp_path, "start over")
    torch.save({"weights": 1}, tmp_path / STATE_FILE)
    with pytest.raises(ValueError, match="not an evspec training state.*start over"):
        load_state(tmp_path, "start over")


def test_resume_rule_names_each_changed_setting_but_the_resumable_ones() -> None:
    ours, theirs = {"seed": 1, "lr": 2.0, "steps": 9, "new": 0}, {"seed": 0, "lr": 2.0, "steps": 5}
    refuse_other_settings(ours, None, (), Path("run"), "fix")
    refuse_other_settings({**ours, "seed": 0}, theirs, {"steps"}, Path("run"), "fix")
    with pytest.raises(ValueError, match=r"run holds a run with other settings: seed = 1 "
                                         r"\(the run's: 0\); fix"):
        refuse_other_settings(ours, theirs, {"steps"}, Path("run"), "fix")


def test_a_run_config_with_unknown_keys_is_refused_naming_them() -> None:
    from evspec.training.heads.train import TrainConfig
    from evspec.training.world.config import WorldTrainConfig

    for cls in (TrainConfig, WorldTrainConfig):
        with pytest.raises(ValueError, match=rf"{cls.__name__}: unknown key\(s\) \['colour'\]"):
            cls.from_dict({"colour": "red"})
