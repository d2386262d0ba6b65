"""``evspec generate`` end to end on the tiny presets: every drafter, schedule and γ policy
gives the target-only answer; bad options exit with 2 and a message."""

from __future__ import annotations

import json
import re

import pytest
from typer.testing import CliRunner

from evspec.cli import app

BASE = ["generate", "-q", "What is moving?", "--target", "tiny-random", "--video", "random",
        "--max-new-tokens", "12",
        "--ignore-eos", "--json", "--device", "cpu"]


def _tokens(*extra: str) -> list[int]:
    res = CliRunner().invoke(app, [*BASE, *extra])
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout.strip().splitlines()[-1])["tokens"]


@pytest.fixture(scope="module")
def reference() -> list[int]:
    return _tokens("--drafter", "none")


@pytest.mark.parametrize("extra", [
    ("--drafter", "eventgpt", "--events", "random"),
    ("--drafter", "eventgpt", "--events", "random", "--schedule", "pipelined"),
    ("--drafter", "eventgpt", "--events", "random", "--gamma-policy", "dynamic", "--gamma", "6"),
    ("--drafter", "cascade", "--events", "random"),  # needs the EventGPT side as its middle level
    ("--drafter", "prompt-lookup"),
    ("--drafter", "eventgpt", "--events", "random", "--fast"),  # static caches on the CPU
])
def test_every_way_gives_the_target_only_answer(reference: list[int], extra: tuple[str, ...]) -> None:
    assert _tokens(*extra) == reference


@pytest.mark.parametrize("extra, message", [
    (("--schedule", "sideways"), "--schedule"),
    (("--gamma-policy", "greedy"), "--gamma-policy"),
    (("--gamma-policy", "dynamic", "--schedule", "pipelined", "--drafter", "eventgpt"), "sequential"),
    (("--gamma", "0"), "--gamma"),
    (("--compile", "--no-fast"), "add --fast"),
    (("--kernels", "triton", "--no-fast"), "add --fast"),
    (("--fast", "--kernels", "cutlass"), "--kernels"),
    (("--fast", "--kernels", "triton"), "head_dim 16"),  # the tiny preset: the kernels refuse it, clearly
    (("--drafter", "oracle"), "unknown drafter"),
    (("--drafter", "eventgpt", "--drafter-path", "runs/x"), "loads no trained module"),
    (("--drafter", "target-head", "--drafter-path", "untrained"), "controlled"),
    (("--drafter", "target-head", "--drafter-path", "/nonexistent/head"), "not a module checkpoint"),
])
def test_bad_options_exit_2_with_a_message(extra: tuple[str, ...], message: str) -> None:
    res = CliRunner().invoke(app, [*BASE, *extra])
    assert res.exit_code == 2 and message in res.output, res.output


WORLD = __import__("pathlib").Path(__file__).resolve().parents[2] / "src" / "evspec" / "assets" / "world"


@pytest.mark.skipif(not (WORLD / "heads" / "target-head" / "config.json").is_file(), reason="world assets not shipped")
def test_a_trained_head_from_any_folder(tmp_path) -> None:
    """--drafter-path loads a trained head from a folder of the user's (here a copy of the
    shipped one) and the answer is the target-only answer."""
    import shutil

    clip = sorted((WORLD / "clips").iterdir())[0]
    mine = shutil.copytree(WORLD / "heads" / "target-head", tmp_path / "my-head")
    args = ["generate", "-q", "What is moving?", "--target", str(WORLD / "target"), "--draft-model",
            str(WORLD / "drafter"), "--video", str(clip / "frames"), "--events", str(clip / "events.npz"),
            "--max-new-tokens", "16", "--json", "--device", "cpu"]
    base = CliRunner().invoke(app, args)
    head = CliRunner().invoke(app, [*args, "--drafter", "target-head", "--drafter-path", str(mine)])
    assert base.exit_code == 0 and head.exit_code == 0, head.output
    got = json.loads(head.stdout.strip().splitlines()[-1])
    assert got["tokens"] == json.loads(base.stdout.strip().splitlines()[-1])["tokens"]
    assert got["stats"]["accepted"] > 0
    # bench's NAME=FOLDER syntax works here too, and a NAME other than --drafter is refused
    named = CliRunner().invoke(app, [*args, "--drafter", "target-head", "--drafter-path",
                                     f"target-head={mine}"])
    assert json.loads(named.stdout.strip().splitlines()[-1])["tokens"] == got["tokens"]
    wrong = CliRunner().invoke(app, [*args, "--drafter", "target-head", "--drafter-path",
                                     f"event-head={mine}"])
    assert wrong.exit_code == 2 and "names 'event-head'" in wrong.output


def test_compiled_target_compiles_its_score_of_gamma_plus_one(reference: list[int], monkeypatch) -> None:
    """``--fast --compile --gamma 6`` asks the target (not the drafter) to compile its
    7-token scores unpadded; the run itself uses the aot_eager backend (no code generation
    on the CPU) and still gives the target-only answer."""
    from evspec.models.causal_lm import CausalLMWrapper

    asked: list[tuple[str, tuple[int, ...]]] = []
    original = CausalLMWrapper.enable_fast

    def spy(self, *args, **kwargs):
        asked.append((type(self).__name__, kwargs.get("score_sizes", ())))
        return original(self, *args, **{**kwargs, "compile_backend": "aot_eager"})

    monkeypatch.setattr(CausalLMWrapper, "enable_fast", spy)
    tokens = _tokens("--drafter", "eventgpt", "--events", "random", "--fast", "--compile", "--gamma", "6")
    assert tokens == reference
    assert sorted(asked) == [("EventGPT", ()), ("VideoLlavaTarget", (7,))]


def test_the_summary_line_gives_the_rate_after_the_first_token() -> None:
    res = CliRunner().invoke(app, [a for a in BASE if a != "--json"] + ["--drafter", "none", "--fast"])
    assert res.exit_code == 0, res.output
    line = res.stdout.strip().splitlines()[-1]
    assert line.startswith("[none, γ=0] 12 tokens in ") and " ms/token; 11 target passes" in line
    total, ttft, rate = (float(x) for x in re.findall(r"in ([\d.]+) ms \(TTFT ([\d.]+) ms, then ([\d.]+) ms/token", line)[0])
    assert rate == pytest.approx((total - ttft) / 11, abs=0.02)


@pytest.mark.parametrize("seed", ["0", "3"])
def test_bf16_answers_are_identical_by_default_and_the_numerics_are_stated(seed: str) -> None:
    """The default engine is the fast one, exact: in bf16 the EventGPT drafter's answer is the
    target-only answer; ``--json`` says so (and that ``--no-fast`` is not exact)."""
    runs = {}
    for drafter in ("none", "eventgpt"):
        args = ["--dtype", "bfloat16", "--seed", seed, "--max-new-tokens", "24",
                "--drafter", drafter, "--events", "random"]
        res = CliRunner().invoke(app, [*BASE, *args])
        assert res.exit_code == 0, res.output
        runs[drafter] = json.loads(res.stdout.strip().splitlines()[-1])
    assert runs["eventgpt"]["tokens"] == runs["none"]["tokens"]
    assert runs["none"]["numerics"] == {"dtype": "bfloat16", "engine": "fast", "exact": True}
    res = CliRunner().invoke(app, [*BASE, "--dtype", "bfloat16", "--no-fast", "--drafter", "none"])
    assert json.loads(res.stdout.strip().splitlines()[-1])["numerics"] == {
        "dtype": "bfloat16", "engine": "plain", "exact": False}
