"""The CLI's common surface: choices refused before any model import, progress bars only on
a terminal (none with --no-progress), warnings as one line, --help in one vocabulary."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import warnings

import pytest
from tqdm import tqdm
from typer.testing import CliRunner

from api_paths import ROOT

from evspec.cli import app
from evspec.progress import NO_PROGRESS_ENV, bar_disable


def test_bad_choices_are_refused_before_torch_is_imported():
    code = ("import sys\nfrom typer.testing import CliRunner\nfrom evspec.cli import app\n"
            "for args in (['generate', '-q', 'x', '--video', 'random', '--schedule', 'sideways'],\n"
            "             ['generate', '-q', 'x', '--video', 'random', '--drafter', 'oracle'],\n"
            "             ['serve', '--kernels', 'cutlass']):\n"
            "    res = CliRunner().invoke(app, args)\n"
            "    assert res.exit_code == 2, res.output\n"
            "assert 'torch' not in sys.modules\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    assert out.returncode == 0, out.stderr


def test_missing_inputs_are_refused_not_invented():
    res = CliRunner().invoke(app, ["generate", "-q", "What is moving?"])
    assert res.exit_code == 2 and "--video is required" in res.output
    res = CliRunner().invoke(app, ["generate", "-q", "What is moving?", "--video", "random",
                                   "--target", "tiny-random", "--drafter", "eventgpt"])
    assert res.exit_code == 2 and "pass --events" in res.output


def test_bars_only_on_a_terminal_and_never_with_no_progress(monkeypatch):
    monkeypatch.delenv(NO_PROGRESS_ENV, raising=False)
    assert tqdm(total=2, disable=bar_disable(True), file=io.StringIO()).disable  # a log file
    assert bar_disable(False) is True and bar_disable(True) is None
    monkeypatch.setattr(warnings, "formatwarning", warnings.formatwarning)  # restored after
    res = CliRunner().invoke(app, ["--no-progress", "report", "/nonexistent-run"])
    assert res.exit_code != 0
    assert os.environ.get(NO_PROGRESS_ENV) == "1" and bar_disable(True) is True
    monkeypatch.delenv(NO_PROGRESS_ENV)
    line = warnings.formatwarning("window far from 50 ms", UserWarning, "/x/y.py", 3, "code()")
    assert line == "warning: UserWarning: window far from 50 ms\n"


@pytest.mark.parametrize("verb", [["generate"], ["serve"], ["train"], ["eval"], ["collect"],
                                  ["world", "train"], ["world", "eval"], ["world", "pack"]])
def test_help_speaks_one_vocabulary(verb):
    res = CliRunner().invoke(app, [*verb, "--help"], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    for old in ("--gammas", "--eval-interval", "--checkpoint-interval", "--time-budget-s",
                "--engine-time-budget-s"):
        assert old not in res.output, (verb, old)
    if verb[0] == "world" and verb[1] in ("eval", "pack"):
        assert "--draft-model" in res.output and "--drafter " not in res.output


def test_one_answer_length_default_across_verbs():
    import typer.main

    root = typer.main.get_command(app)
    defaults = {}
    for path in (["generate"], ["serve"], ["bench"], ["collect"], ["eval"], ["world", "eval"]):
        cmd = root
        for name in path:
            cmd = cmd.commands[name]
        (param,) = [p for p in cmd.params if p.name == "max_new_tokens"]
        defaults[" ".join(path)] = param.default
    assert set(defaults.values()) == {64}, defaults


def test_typed_choices_match_the_libraries_lists():
    from evspec.modules.checkpoint import MODULE_KINDS
    from evspec.cli.choices import Amp, Module, Role
    from evspec.training.world.config import AMP_MODES, ROLES

    assert tuple(m.value for m in Module) == MODULE_KINDS
    assert tuple(a.value for a in Amp) == AMP_MODES
    assert tuple(r.value for r in Role) == tuple(ROLES)
