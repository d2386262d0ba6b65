"""A tiny end-to-end benchmark on CPU: real presets, real engine, CLI to report."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from evspec.bench.config import BenchConfig
from evspec.bench.records import read_records
from evspec.bench.run import ModelSpec, bench, load_backend
from evspec.cli import app


def test_cli_bench_end_to_end(tmp_path):
    out = tmp_path / "run"
    args = ["bench", "--dataset", "random:2", "--out", str(out), "--target", "tiny-random",
            "--device", "cpu", "--drafters", "none,prompt-lookup,self", "--gamma", "1,3",
            "--max-new-tokens", "8", "--warmup", "1"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "12 measurements written (0 failed)" in res.output
    recs = read_records(out)
    assert len(recs) == 12 and all(r["status"] == "ok" for r in recs)
    # the lossless check on real models: every answer equals the target-only answer
    assert all(r["matches_target"] for r in recs if r["kind"] != "target")
    selfs = [r for r in recs if r["drafter"] == "self"]
    assert all(r["alpha"] == 1.0 and r["timings"]["draft_prefill_ms"] > 0 for r in selfs)
    for r in recs:
        if r["kind"] != "hf":
            t = r["timings"]
            assert 0 < t["ttft_ms"] <= t["total_ms"] and t["target_prefill_ms"] > 0
            assert t["target_preprocess_ms"] > 0 and t["target_vision_ms"] > 0
            assert t["decode_ms"] == pytest.approx(sum(x[2] + x[3] for x in r["rounds"]))
    env = json.loads((out / "run.json").read_text())["sessions"][0]["env"]
    assert env["command"][0] == "evspec" and env["backend"]["dtype"] == "float32"
    assert (out / "report.md").read_text().startswith("# evspec benchmark (measured)")
    # the same command again has nothing left to do
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0 and "0 measurements written" in res.output and "12 already done" in res.output


def test_acceptance_controlled_eventgpt_at_small_scale(tmp_path):
    spec = ModelSpec(target="tiny-random", device="cpu")
    backend = load_backend(spec, ("eventgpt",))
    assert backend.draft_model is not None  # defaulted to the target's preset
    for alpha in (1.0, 0.0):
        cfg = BenchConfig(drafters=("eventgpt",), gammas=(2,), max_new_tokens=8, warmup=0,
                          hf_baseline=False, controlled_alpha=alpha, dataset="random:2")
        out = tmp_path / f"a{alpha}"
        bench(cfg, out, spec, backend=backend, report=False, progress=False)
        spec_recs = [r for r in read_records(out) if r["kind"] == "spec"]
        assert len(spec_recs) == 2 and all(r["status"] == "ok" for r in spec_recs), spec_recs[0].get("error")
        assert all(r["matches_target"] and r["controlled_alpha"] == alpha for r in spec_recs)
        assert all(r["timings"]["draft_ms"] > 0 for r in spec_recs)  # the real drafter ran
        accepted = sum(r["accepted"] for r in spec_recs)
        drafted = sum(r["drafted"] for r in spec_recs)
        assert drafted > 0 and accepted == (drafted if alpha == 1.0 else 0)
        assert json.loads((out / "run.json").read_text())["label"] == "acceptance-controlled"
