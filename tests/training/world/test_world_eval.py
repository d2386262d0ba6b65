"""Scoring of world answers, the evaluation (accuracy + engine sweep), packing the shipped
assets, the demo's world path, and the CLI verbs, on the micro world."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from evspec.data.manifest import load_manifest
from evspec.data.world.generate import load_world_extra
from evspec.training.world.evaluate import EvalConfig, evaluate_world
from evspec.training.world.report import to_markdown
from evspec.training.world.scoring import extract_facts, score_answer


# -- scoring -------------------------------------------------------------------------------------


def test_facts_of_both_answer_styles() -> None:
    f = extract_facts("A red circle moves down-left, a blue square stays still and an orange "
                      "cross moves up.")
    assert [(o.colour, o.shape, o.motion) for o in f.objects] == [
        ("red", "circle", "down-left"), ("blue", "square", "static"), ("orange", "cross", "up")]
    assert extract_facts("The green diamond moves up and to the left.").direction == "up-left"
    assert extract_facts("The green diamond moves to the left.").direction == "left"
    assert extract_facts("The pink cross moves quickly.").speed == "fast"
    assert extract_facts("In the scene the cross is moving slow.").speed == "slow"
    assert extract_facts("In the scene no objects are moving.").number == 0
    assert extract_facts("There are three objects.").number == 3
    d = extract_facts("In the scene there is a circle moving left and a square moving down-right.")
    assert [(o.colour, o.shape, o.motion) for o in d.objects] == [
        (None, "circle", "left"), (None, "square", "down-right")]


def test_scores_against_truth() -> None:
    fields = {"count": "2", "shapes": "circle,square", "colours": "red,blue",
              "motions": "left,static"}
    ref = "A red circle moves left and a blue square stays still."
    swapped = "A blue square stays still and a red circle moves left."
    assert score_answer("describe", ref, ref, fields).exact
    s = score_answer("describe", swapped, ref, fields)
    assert not s.exact and s.fields and s.correct  # order-free field-level match
    wrong = score_answer("describe", "A red circle moves right and a blue square stays still.",
                         ref, fields)
    assert not wrong.correct and not wrong.visible
    drafter = "In the scene there is a circle moving left."
    s = score_answer("describe", drafter, drafter, fields)
    assert s.exact and not s.fields and s.visible  # right about what events show, no colours
    colour = {"shape": "circle", "colour": "red"}
    s = score_answer("colour", "In the scene the circle has an unknown colour.",
                     "In the scene the circle has an unknown colour.", colour)
    assert s.exact and not s.fields and s.visible is None
    count = {"count": "3", "moving_count": "1"}
    s = score_answer("count", "In the scene one object is moving.",
                     "In the scene one object is moving.", count)
    assert not s.fields and s.visible  # static objects are invisible to events


def test_every_generated_reference_scores_right(micro_world: Path) -> None:
    manifest = load_manifest(micro_world / "manifest.json")
    n = 0
    for split in ("train", "val", "test"):
        extra = load_world_extra(micro_world, split)
        for e in manifest.split(split):
            for qa, more in zip(e.questions, extra[e.id]["qa"]):
                s = score_answer(qa.qtype, qa.answer, qa.answer, more["fields"])
                assert s.exact and s.fields, (qa.qtype, qa.answer, more["fields"])
                d = more["answer_drafter"]
                sd = score_answer(qa.qtype, d, d, more["fields"])
                assert sd.visible in (True, None), (qa.qtype, d, more["fields"])
                n += 1
    assert n > 50


# -- evaluation --------------------------------------------------------------------------------


def test_evaluate_world_on_the_micro_test_split(micro_world: Path, micro_runs: dict[str, Path]) -> None:
    cfg = EvalConfig(target=micro_runs["target"] / "model", drafter=micro_runs["drafter"] / "model",
                     data=micro_world, gammas=(1, 3), acceptance_per_type=1, max_new_tokens=6,
                     device="cpu", workers=1)
    summary = evaluate_world(cfg)
    test_questions = sum(len(e.questions) for e in load_manifest(micro_world / "manifest.json").split("test"))
    assert len(summary["questions"]) == test_questions
    acc = summary["accuracy"]
    assert acc["overall"]["n"] == test_questions
    assert sum(row["n"] for q, row in acc.items() if q != "overall") == test_questions
    ac = summary["acceptance"]
    assert ac["questions"] == len({q["qtype"] for q in summary["questions"]})
    assert ac["lossless_runs"] == ac["runs"] == 2 * ac["questions"]  # SD changed nothing
    for g, cell in ac["by_gamma"].items():
        assert len(cell["position"]) == int(g)
        if cell["drafted"] == 0:  # every answer ended at its first token: nothing to draft
            assert cell["alpha"] is None
            continue
        assert 0 <= cell["alpha"] <= 1 and 1 <= cell["tau"] <= int(g) + 1
    report = to_markdown(summary)
    assert "| **overall** |" in report and "γ=3" in report and "pos 3" in report
    json.dumps(summary)  # JSON-ready


# -- packing, the demo, the CLI ------------------------------------------------------------------


def test_pack_then_demo_on_the_packed_assets(micro_world: Path, micro_runs: dict[str, Path],
                                            tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from evspec import demo
    from evspec.training.world.assets import pack_world_assets

    world = pack_world_assets(micro_world, micro_runs["target"], micro_runs["drafter"],
                              tmp_path / "assets" / "world", clips=1)
    manifest = load_manifest(world / "manifest.json")
    assert [e.split for e in manifest.clips] == ["test"]
    assert (world / manifest.clips[0].events).is_file() and (world / manifest.clips[0].video).is_dir()
    readme = (world / "README.md").read_text()
    assert "evspec world train --role target" in readme and "--seed 1" in readme
    with pytest.raises(FileExistsError):
        pack_world_assets(micro_world, micro_runs["target"], micro_runs["drafter"], world, clips=1)

    assert not demo.world_available(tmp_path / "nowhere")
    monkeypatch.setenv(demo.ASSETS_ENV, str(tmp_path / "assets"))
    assert demo.world_available()
    target, drafter = demo.load_world_models()
    cases = demo.load_world_cases(target, drafter, limit=3)
    assert len(cases) == 3 and len({c.request.qtype for c in cases}) == 3
    assert all(c.reference for c in cases)
    rows = demo.run_demo(target, drafter, cases, gamma=3, max_new_tokens=6)
    assert all(r.identical for r in rows)
    longest = max(rows, key=lambda r: len(r.baseline.tokens))
    assert len(longest.baseline.tokens) > 1  # 30 micro steps teach more than an instant EOS
    assert len(demo.format_rounds(longest.speculative, target)) == len(longest.speculative.stats.rounds) > 0


def test_cli_verbs_train_and_eval(micro_world: Path, micro_runs: dict[str, Path], tmp_path: Path) -> None:
    from evspec.cli.world_train import register_into

    app = typer.Typer()
    register_into(app)
    runner = CliRunner()
    res = runner.invoke(app, ["train", "--role", "drafter", "--data", str(micro_world), "--out",
                              str(tmp_path / "run"), "--preset", "world-micro", "--steps", "3",
                              "--batch-size", "4", "--device", "cpu", "--workers", "1",
                              "--val-generate", "1", "--export-fp16", str(tmp_path / "fp16")])
    assert res.exit_code == 0, res.output
    assert "3/3 steps" in res.output and (tmp_path / "fp16" / "model.safetensors").is_file()
    bad = runner.invoke(app, ["train", "--role", "critic", "--data", str(micro_world), "--out",
                              str(tmp_path / "x")])
    assert bad.exit_code == 2 and "'critic' is not one of" in bad.output
    res = runner.invoke(app, ["eval", "--target", str(micro_runs["target"]), "--draft-model",
                              str(tmp_path / "run"), "--data", str(micro_world),
                              "--acceptance-per-type", "0", "--max-new-tokens", "4",
                              "--device", "cpu", "--workers", "1", "--out", str(tmp_path / "ev")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "ev" / "eval.md").is_file()
    assert json.loads((tmp_path / "ev" / "eval.json").read_text())["accuracy"]["overall"]["n"] > 0
