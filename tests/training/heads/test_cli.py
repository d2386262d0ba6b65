"""The verbs ``evspec collect | train | eval`` (in-process, tiny presets, micro world)."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from evspec.cli import app

runner = CliRunner()
MODELS = ["--target", "tiny-random", "--draft-model", "tiny-random", "--device", "cpu"]


def test_collect_train_eval_verbs(micro_world, tmp_path):
    data, run, ev = tmp_path / "data", tmp_path / "run", tmp_path / "ev"
    for split in ("train", "test"):
        res = runner.invoke(app, ["collect", "--dataset", str(micro_world), "--out", str(data), "--split", split,
                                  "--limit", "4", "--max-new-tokens", "6", "--store-dtype", "float32", *MODELS])
        assert res.exit_code == 0, res.output
        assert "collected 4 new examples" in res.output
    res = runner.invoke(app, ["train", "--module", "target-head", "--data", str(data), "--out", str(run),
                              "--steps", "6", "--eval-every", "3", "--batch-size", "4", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert (run / "best" / "config.json").is_file() and (run / "loss.png").is_file()
    # the written config reads back: a second run from it has the same settings
    written = json.loads((run / "train_config.json").read_text())
    res = runner.invoke(app, ["train", "--config", str(run / "train_config.json"), "--data", str(data),
                              "--out", str(tmp_path / "run2"), "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "run2" / "train_config.json").read_text()) == written
    # ... and a resume with other settings is refused, naming them
    res = runner.invoke(app, ["train", "--config", str(run / "train_config.json"), "--data", str(data),
                              "--out", str(run), "--seed", "5", "--steps", "8", "--device", "cpu"])
    assert res.exit_code == 1 and "seed = 5" in res.output and "--allow-changes" in res.output
    res = runner.invoke(app, ["eval", "--dataset", str(micro_world), "--out", str(ev), "--drafter", "eventgpt",
                              "--drafter", f"th={run / 'best'}", "--gamma", "2", "--report-gamma", "2",
                              "--limit", "2", "--max-new-tokens", "6", "--offline-data", str(data),
                              "--warmup", "0", *MODELS])
    assert res.exit_code == 0, res.output
    assert "| th |" in res.output
    assert {r["label"] for r in json.loads((ev / "eval.json").read_text())["rows"]} == {"eventgpt", "th"}


def test_verbs_fail_with_a_message(micro_world, tmp_path):
    res = runner.invoke(app, ["train", "--module", "lora", "--data", str(tmp_path), "--out", str(tmp_path / "r"),
                              "--device", "cpu"])
    assert res.exit_code == 1 and "--draft-model" in res.output
    res = runner.invoke(app, ["train", "--module", "bottleneck", "--data", str(tmp_path), "--out",
                              str(tmp_path / "r"), "--device", "cpu"])
    assert res.exit_code == 1 and "index-*.json" in res.output
    res = runner.invoke(app, ["collect", "--dataset", str(micro_world), "--out", str(tmp_path / "d"),
                              "--split", "everything", *MODELS])
    assert res.exit_code == 1 and "split" in res.output
