"""What the report draws and exports: plots whose labels and legends hide nothing, the
projection with the verify cost, a train-loss curve without lag, records as CSV."""

from __future__ import annotations

import csv

import pytest
from bench_fakes import FakeBackend, make_items
from typer.testing import CliRunner

from evspec.bench import plots
from evspec.bench.config import BenchConfig
from evspec.bench.harness import run_bench
from evspec.bench.records import read_records
from evspec.bench.summary import summarize
from evspec.cli import app

pytest.importorskip("matplotlib")


@pytest.fixture
def run_dir(tmp_path):
    cfg = BenchConfig(drafters=("none", "fast", "slow"), gammas=(2, 4), warmup=0, dataset="fake")
    run_bench(cfg, make_items(3), FakeBackend(accept={"fast": 4, "slow": 1}), tmp_path,
              progress=False)
    return tmp_path


@pytest.fixture
def figures(monkeypatch):
    """The figures the plot functions draw, laid out but kept open."""
    kept = []

    def keep(fig, path):
        fig.tight_layout()
        fig.canvas.draw()
        kept.append(fig)
        return path

    monkeypatch.setattr(plots, "_save", keep)
    return kept


def _overlap(a, b) -> bool:
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


def test_speedup_projection_includes_the_verify_cost(run_dir, tmp_path, figures):
    summaries = summarize(read_records(run_dir))
    plots.speedup_vs_gamma(summaries, tmp_path / "s.png", "t")
    ax = figures[0].axes[0]
    lines = [line for line in ax.get_lines() if line.get_linestyle() == "--"]
    dashed = sorted(tuple(line.get_ydata()) for line in lines)
    groups = plots._by_drafter(summaries).values()
    want = sorted(tuple(s.predicted_v for s in rows) for rows in groups)
    assert dashed == pytest.approx(want)
    assert all(s.predicted_v < s.predicted for s in summaries if s.predicted_v)  # v = 1.2 here


def test_time_breakdown_legend_hides_no_bar(run_dir, tmp_path, figures):
    plots.time_breakdown(summarize(read_records(run_dir)), tmp_path / "t.png", "t")
    fig = figures[0]
    ax = fig.axes[0]
    renderer = fig.canvas.get_renderer()
    legend = ax.get_legend().get_window_extent(renderer)
    # beside the axes, so no bar of any length is under it
    assert not _overlap(legend, ax.get_window_extent(renderer))
    assert not any(_overlap(legend, bar.get_window_extent(renderer)) for bar in ax.patches)


def test_accepted_histogram_labels_do_not_collide(run_dir, tmp_path, figures):
    plots.accepted_histogram(summarize(read_records(run_dir)), tmp_path / "h.png", "t")
    fig = figures[0]
    renderer = fig.canvas.get_renderer()
    labels = [ax.xaxis.label.get_window_extent(renderer) for ax in fig.axes
              if ax.get_visible() and ax.get_xlabel()]
    assert labels
    assert not any(_overlap(a, b) for i, a in enumerate(labels) for b in labels[i + 1:])
    width = fig.get_window_extent(renderer).x1
    assert all(0 <= box.x0 and box.x1 <= width for box in labels)


def test_train_loss_curve_does_not_lag():
    from evspec.training.heads.curves import _smooth

    falling = [100.0 - i for i in range(60)]
    assert _smooth(falling)[30] == pytest.approx(falling[30])  # a trailing mean sits above
    assert len(_smooth(falling)) == 60


def test_report_csv_has_a_row_per_record(run_dir):
    res = CliRunner().invoke(app, ["report", str(run_dir), "--csv", "--no-plots"])
    assert res.exit_code == 0, res.output
    rows = list(csv.DictReader(open(run_dir / "records.csv", encoding="utf-8")))
    records = read_records(run_dir)
    assert len(rows) == len(records)
    assert [r["key"] for r in rows] == [r["key"] for r in records]
    assert {"drafter", "gamma", "tau", "timings.total_ms", "n_rounds"} <= set(rows[0])
    spec = next((r, rec) for r, rec in zip(rows, records) if rec["drafter"] == "slow")
    assert float(spec[0]["tau"]) == pytest.approx(spec[1]["tau"])
    assert float(spec[0]["timings.total_ms"]) == pytest.approx(spec[1]["timings"]["total_ms"])
