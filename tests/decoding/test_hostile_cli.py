"""The CLI's one error path: bad input ends as ``error: FILE: what is wrong: how to fix it``
on stderr with a non-zero exit, never a traceback, and before any model loads where the
input can be checked first."""

from __future__ import annotations

import pytest
import typer
from typer.testing import CliRunner

from evspec.cli import app
from evspec.cli.errors import ErrorGroup


@pytest.fixture()
def no_models(monkeypatch):
    import evspec.loading as loading

    def refuse(*args, **kwargs):
        raise AssertionError("a model loaded before the input was checked")

    monkeypatch.setattr(loading, "load_models", refuse)


@pytest.mark.parametrize("args, message", [
    (["--device", "foo"], "error: --device 'foo': not a device: use auto, cpu, cuda or cuda:N"),
    (["--events", "nowhere.npz"], "error: --events nowhere.npz: no such file or folder"),
    (["--video", "nowhere.mp4"], "error: --video nowhere.mp4: no such file or folder"),
    (["--top-p", "nan"], "error: --top-p must be in (0, 1]"),
])
def test_generate_checks_inputs_before_loading(no_models, args, message) -> None:
    res = CliRunner().invoke(app, ["generate", "-q", "hi", *args])
    assert res.exit_code == 2 and message in res.output, res.output
    assert "Traceback" not in res.output


def test_an_escaping_os_error_is_one_line(tmp_path) -> None:
    (tmp_path / "run.json").write_text("{}")
    (tmp_path / "records.jsonl").mkdir()  # a folder where a file belongs
    res = CliRunner().invoke(app, ["report", str(tmp_path), "--no-plots"])
    assert res.exit_code == 1, res.output
    path = tmp_path / "records.jsonl"
    assert res.output.startswith(f"error: {path}: is a directory: give a file")


def test_group_turns_input_errors_into_lines_and_keeps_bugs(monkeypatch) -> None:
    demo = typer.Typer(cls=ErrorGroup)

    @demo.command()
    def broken(kind: str) -> None:
        if kind == "value":
            raise ValueError("data.json: field x: must be positive: pass x > 0")
        if kind == "memory":
            raise MemoryError()
        raise KeyError("a bug")

    @demo.command()
    def other() -> None:
        pass

    runner = CliRunner()
    res = runner.invoke(demo, ["broken", "value"])
    line = "error: data.json: field x: must be positive: pass x > 0\n"
    assert (res.exit_code, res.output) == (1, line)
    res = runner.invoke(demo, ["broken", "memory"])
    assert res.exit_code == 1 and res.output.startswith("error: out of memory")
    res = runner.invoke(demo, ["broken", "bug"])
    assert isinstance(res.exception, KeyError)  # a bug keeps its traceback
    monkeypatch.setenv("EVSPEC_TRACEBACK", "1")
    res = runner.invoke(demo, ["broken", "value"])
    assert isinstance(res.exception, ValueError)
