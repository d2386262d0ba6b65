"""benchmarks/exactness.py at tiny size on the CPU: every drafter's answers identical to the
target-only answers (no forced reference), the step timings and both output files written."""

from __future__ import annotations

import json

import pytest

from bench_scripts import load_script


def test_exactness_script_runs_tiny(tmp_path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    mod = load_script("exactness", monkeypatch)
    out = mod.main(
        [
            "--preset",
            "tiny-random",
            "--device",
            "cpu",
            "--dtype",
            "bfloat16",
            "--requests",
            "3",
            "--max-new-tokens",
            "10",
            "--repeats",
            "2",
            "--score-sizes",
            "2,17",
            "--out",
            str(tmp_path),
        ]
    )
    assert out["config"]["exact"] and out["config"]["forced_reference"] is False
    assert set(out["drafters"]) == {"self", "target-head", "eventgpt"}
    for name, r in out["drafters"].items():
        assert r["identical"] == r["requests"] == 3, name
    steps = out["steps"]
    assert (
        steps["decode_ms_per_token"] > 0
        and steps["prefill_ms"] > 0
        and set(steps["scores"]) == {"2", "17"}
    )
    saved = json.loads((tmp_path / "exactness.json").read_text())
    assert saved["drafters"]["self"]["identical"] == 3
    assert "| self | 3 / 3 |" in (tmp_path / "exactness.md").read_text()
    with pytest.raises(SystemExit):
        mod.parse(["--drafters", "nonsense"])
    with pytest.raises(SystemExit):
        mod.parse(["--help"])
    assert "questions answered per drafter" in capsys.readouterr().out
