"""Summary figures against hand-computed values, and the report built from a recorded run."""

from __future__ import annotations

import json
import sys

import pytest
from bench_fakes import FakeBackend, make_items
from typer.testing import CliRunner

from evspec.bench.config import BenchConfig
from evspec.bench.harness import run_bench
from evspec.bench.records import read_records
from evspec.bench.report import build_report
from evspec.bench.summary import paired_speedup, position_alpha, summarize
from evspec.cli import app


def _record(tmp_path, **kw):
    cfg = BenchConfig(**{**dict(drafters=("none", "fast", "slow"), gammas=(4,), warmup=0, dataset="fake"), **kw})
    run_bench(cfg, make_items(4), FakeBackend(accept={"fast": 4, "slow": 1}), tmp_path, progress=False)
    return tmp_path


def test_paired_speedup_and_position_alpha_by_hand():
    sp = paired_speedup([100.0, 200.0], [50.0, 50.0])
    assert sp.n == 2 and sp.ratio_of_means == pytest.approx(3.0) and sp.mean_of_ratios == pytest.approx(3.0)
    assert sp.std_of_ratios == pytest.approx(2**0.5)
    assert 2.0 <= sp.ci95[0] <= sp.ci95[1] <= 4.0
    assert paired_speedup([], []) is None
    assert position_alpha([[4, 4], [4, 1], [2, 0]]) == pytest.approx([2 / 3, 1 / 2, 1.0, 1.0])


def test_summary_matches_hand_computation(tmp_path):
    by = {(s.drafter, s.gamma): s for s in summarize(read_records(_record(tmp_path)))}
    target, hf = by[("none", 0)], by[("hf-generate", 0)]
    assert target.mean_total_ms == 110.0 and target.vs_target is None
    assert target.vs_hf.ratio_of_means == pytest.approx(250 / 110)
    assert hf.vs_target.ratio_of_means == pytest.approx(110 / 250)
    fast = by[("fast", 4)]
    assert fast.vs_target.ratio_of_means == pytest.approx(110 / 51) and fast.alpha == 1.0
    assert fast.match_rate == 1.0
    slow = by[("slow", 4)]
    # rounds (k, n): (4,1) (4,1) (4,1) (2,1) (0,0); 1 ms per drafted token, 12 ms per pass
    assert slow.alpha == pytest.approx(4 / 14)
    assert slow.alpha_model == pytest.approx(0.5)  # 4 successes in 8 trials
    assert slow.tau == pytest.approx(9 / 5)
    assert slow.c == pytest.approx(1 / 12)
    assert slow.verify_cost == pytest.approx(1.2)
    # prediction with each round's k: mean τ(0.5, k) over k = 4, 4, 4, 2, 0 and mean k = 2.8
    tau_pred = (3 * 1.9375 + 1.75 + 1.0) / 5
    assert slow.mean_drafted == pytest.approx(2.8)
    assert slow.predicted == pytest.approx(tau_pred / (2.8 / 12 + 1))
    # a round = γ̄·c + 1 score passes of v = 1.2 steps each: τ / (v·(γ̄·c + 1))
    assert slow.predicted_v == pytest.approx(tau_pred / (1.2 * (2.8 / 12 + 1)))
    assert slow.decode_speedup == pytest.approx(90 / 74)
    assert slow.vs_target.ratio_of_means == pytest.approx(110 / 94)
    assert slow.accepted_hist == [4, 16, 0, 0, 0]  # 4 requests x (one k=0 round, four n=1)
    assert slow.stages["draft_ms"] == 14 and slow.stages["score_ms"] == 60
    assert slow.stages["target_prefill_ms"] == 20 and slow.stages["other_ms"] == pytest.approx(0.0)


def test_report_builds_from_a_recorded_run(tmp_path):
    run_dir = _record(tmp_path)
    path = build_report(run_dir)
    text = path.read_text()
    assert text.startswith("# evspec benchmark (measured)")
    assert "| slow | 4 | 0.286 | 0.500 | 1.80 | 2.80 | 0.083 | 1.20 |" in text  # α, α model, τ, γ̄, c, v
    assert "1.17× [1.17, 1.17]" in text  # 110 / 94 measured, beside ...
    assert "| 1.39× | 1.16× |" in text  # ... the predicted 1.389 (and 1.157 with v)
    assert "HF generate vs evspec target-only: 100% identical." in text
    for name in ("speedup_vs_gamma", "alpha_by_position", "time_breakdown", "accepted_hist"):
        png = run_dir / "plots" / f"{name}.png"
        assert png.read_bytes()[:4] == b"\x89PNG" and f"plots/{name}.png" in text
    summary = json.loads((run_dir / "summary.json").read_text())
    assert {c["drafter"] for c in summary["configs"]} == {"none", "hf-generate", "fast", "slow"}


def test_report_shows_failures_and_controlled_label(tmp_path):
    cfg = BenchConfig(drafters=("fast",), gammas=(2,), warmup=0, dataset="fake", controlled_alpha=0.7)
    backend = FakeBackend(accept={"fast": 1}, fail={("question 0?", "fast")})
    run_bench(cfg, make_items(3, bad={2}), backend, tmp_path, progress=False)
    text = build_report(tmp_path, plots=False).read_text()
    assert text.startswith("# evspec benchmark (acceptance-controlled)")
    assert "**Acceptance-controlled** (α = 0.7)" in text
    assert "## Failures" in text and "CUDA out of memory" in text and "FileNotFoundError" in text
    assert not (tmp_path / "plots").exists()


def test_report_cli_and_missing_matplotlib(tmp_path, monkeypatch):
    run_dir = _record(tmp_path)
    runner = CliRunner()
    res = runner.invoke(app, ["report", str(run_dir), "--no-plots"])
    assert res.exit_code == 0, res.output
    assert "report.md" in res.output
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if not installed
    res = runner.invoke(app, ["report", str(run_dir)])
    assert res.exit_code == 1 and "evspec[plot]" in res.output
    res = runner.invoke(app, ["report", str(tmp_path / "nope")])
    assert res.exit_code == 1 and "not a benchmark run folder" in res.output
