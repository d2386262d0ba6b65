"""world train reads its written config back and resumes by default (same settings only);
world pack refuses models of another world or role."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from evspec.cli.world_train import register_into
from evspec.training.world.assets import pack_world_assets

MICRO = ["--preset", "world-micro", "--batch-size", "4", "--device", "cpu", "--workers", "1",
         "--val-generate", "1", "--amp", "off"]


@pytest.fixture
def app():
    app = typer.Typer()
    register_into(app)
    return app


def test_config_reads_back_and_resume_needs_the_same_settings(app, micro_world, tmp_path):
    runner = CliRunner()
    run = tmp_path / "run"
    res = runner.invoke(app, ["train", "--role", "drafter", "--data", str(micro_world), "--out",
                              str(run), "--steps", "4", "--stop-at", "2", *MICRO])
    assert res.exit_code == 0, res.output
    assert "2/4 steps" in res.output
    config = run / "train_config.json"
    # continue from the written config: same settings, so it resumes (to the end: no --stop-at)
    res = runner.invoke(app, ["train", "--config", str(config), "--stop-at", "0"])
    assert res.exit_code == 0, res.output
    assert "4/4 steps" in res.output
    # other settings are refused, naming them
    res = runner.invoke(app, ["train", "--config", str(config), "--seed", "9"])
    assert res.exit_code == 1 and "seed = 9" in res.output
    res = runner.invoke(app, ["train", "--config", str(config), "--no-resume"])
    assert res.exit_code == 1 and "already holds a training run" in res.output
    # the same config into a new folder trains the same run
    res = runner.invoke(app, ["train", "--config", str(config), "--out", str(tmp_path / "b")])
    assert res.exit_code == 0, res.output
    theirs = json.loads((tmp_path / "b" / "train_config.json").read_text())
    ours = json.loads(config.read_text())
    assert {k: v for k, v in theirs.items() if k != "out"} == {k: v for k, v in ours.items()
                                                               if k != "out"}


def test_pack_refuses_another_world_or_swapped_roles(micro_world, micro_runs, tmp_path):
    with pytest.raises(ValueError, match="is a drafter run, not a target"):
        pack_world_assets(micro_world, micro_runs["drafter"], micro_runs["target"],
                          tmp_path / "a", clips=1)
    other = Path(shutil.copytree(micro_world, tmp_path / "other"))
    spec = json.loads((other / "world.json").read_text())
    (other / "world.json").write_text(json.dumps({**spec, "seed": spec.get("seed", 0) + 1}))
    with pytest.raises(ValueError, match="another world"):
        pack_world_assets(other, micro_runs["target"], micro_runs["drafter"], tmp_path / "b",
                          clips=1)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
