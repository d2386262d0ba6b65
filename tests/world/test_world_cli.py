"""``evspec world generate`` through the typer app."""

from __future__ import annotations

from pathlib import Path

import typer
from typer.testing import CliRunner

from evspec.cli.world import register
from evspec.data.manifest import load_manifest


def _app() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def _root() -> None:  # a group, so "world" stays a sub-command
        pass

    register(app)
    return app


def test_world_generate_cli(tmp_path: Path) -> None:
    out = tmp_path / "w"
    args = ["world", "generate", "--out", str(out), "--clips", "3", "--seed", "4", "--workers", "1",
            "--resolution", "32", "--no-tokenizer"]
    result = CliRunner().invoke(_app(), args)
    assert result.exit_code == 0, result.output
    assert "wrote 3 clips" in result.output and "clips/s" in result.output
    manifest = load_manifest(out / "manifest.json")
    assert len(manifest.clips) == 3 and manifest.meta["seed"] == 4
    again = CliRunner().invoke(_app(), args)
    assert again.exit_code == 1 and "--overwrite" in again.output


def test_world_generate_cli_rejects_bad_settings(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        _app(), ["world", "generate", "--out", str(tmp_path / "w"), "--fps", "30"]
    )
    assert result.exit_code == 1
    assert "multiple of video_fps" in result.output
    assert not (tmp_path / "w").exists()
