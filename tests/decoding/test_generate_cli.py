"""``evspec generate`` end to end on the tiny presets: every drafter, schedule and γ policy
gives the target-only answer; bad options exit with 2 and a message."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from evspec.cli import app

BASE = ["generate", "-q", "What is moving?", "--video", "random", "--max-new-tokens", "12",
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
])
def test_every_way_gives_the_target_only_answer(reference: list[int], extra: tuple[str, ...]) -> None:
    assert _tokens(*extra) == reference


@pytest.mark.parametrize("extra, message", [
    (("--schedule", "sideways"), "--schedule"),
    (("--gamma-policy", "greedy"), "--gamma-policy"),
    (("--gamma-policy", "dynamic", "--schedule", "pipelined", "--drafter", "eventgpt"), "sequential"),
    (("--gamma", "0"), "--gamma"),
    (("--drafter", "oracle"), "unknown drafter"),
])
def test_bad_options_exit_2_with_a_message(extra: tuple[str, ...], message: str) -> None:
    res = CliRunner().invoke(app, [*BASE, *extra])
    assert res.exit_code == 2 and message in res.output, res.output
