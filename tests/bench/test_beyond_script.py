"""benchmarks/beyond.py at tiny size on the CPU: every feature runs, every configuration is
lossless (float32), the tables and the JSON record are written."""

from __future__ import annotations

import json

from bench_scripts import load_script  # imports beyond.py's sibling beyond_features too


def test_tiny_run_writes_tables_and_is_lossless(tmp_path, monkeypatch):
    bench = load_script("beyond", monkeypatch)
    out = bench.main([
        "--setting", "tiny", "--requests", "3", "--max-new-tokens", "6", "--gammas", "1,3",
        "--tree-shapes", "2x1", "--batch-sizes", "1,3", "--no-warmup", "--out", str(tmp_path),
    ])
    assert set(out["features"]) == {"gamma", "cascade", "router", "tree", "batch"}
    for feat, rows in out["features"].items():
        for row in rows:
            assert row["match"] == 1.0, (feat, row["config"])  # float32: lossless everywhere
            assert row["tokens"] == out["baseline"]["tokens"], (feat, row["config"])
    configs = [r["config"] for r in out["features"]["gamma"]]
    assert sum("best fixed, hindsight" in c for c in configs) == 1
    assert sum("dynamic" in c for c in configs) == 3
    assert [r["batch"] for r in out["features"]["batch"]] == [1, 3, 1, 3]
    md = (tmp_path / "beyond_tiny.md").read_text()
    for feat in ("## gamma", "## cascade", "## router", "## tree", "## batch", "learned router"):
        assert feat in md
    record = json.loads((tmp_path / "beyond_tiny.json").read_text())
    assert record["env"]["acceptance"] == "real (measured)" and record["env"]["requests"] == 3


def test_world_setting_skips_without_assets(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("EVSPEC_ASSETS", str(tmp_path))  # an assets folder without world/
    bench = load_script("beyond", monkeypatch)
    assert bench.main(["--setting", "world"]) is None
    assert "skipping" in capsys.readouterr().err


def test_acceptance_controlled_path_runs_at_tiny_size(monkeypatch):
    """The 7b setting's logic (controlled α per request, forced references) on the tiny preset."""
    bench = load_script("beyond", monkeypatch)
    out = bench.main([
        "--setting", "7b", "--preset", "tiny-random", "--device", "cpu", "--requests", "2",
        "--max-new-tokens", "8", "--gammas", "2,4", "--features", "gamma,cascade,router,tree,batch",
        "--tree-shapes", "2x2", "--batch-sizes", "2", "--alpha", "0.9,0.1", "--no-warmup",
    ])
    assert out["env"]["acceptance"].startswith("controlled")
    assert isinstance(out["features"]["router"], str)  # needs real acceptance
    gamma_rows = {r["config"]: r for r in out["features"]["gamma"]}
    assert all(r["match"] == 1.0 for r in gamma_rows.values())  # the reference, by construction
    fixed = [r for r in out["features"]["gamma"] if "gamma" in r]
    assert all(0.2 < r["alpha_ml"] < 0.8 for r in fixed)  # requests at 0.9 and 0.1
    tree = out["features"]["tree"][-1]
    assert tree["tau"] > 1.0 and tree["match"] == 1.0
