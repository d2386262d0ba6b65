"""The results page: the README's table and benchmarks/RESULTS.md are what
`evspec report --results benchmarks/` generates from the committed summaries."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from evspec.bench.results import (
    BEGIN,
    END,
    load_rows,
    readme_table,
    results_page,
    splice,
    write_results,
)
from evspec.cli import app

ROOT = Path(__file__).resolve().parents[2]


def test_readme_table_and_results_page_are_the_generated_ones():
    rows = load_rows(ROOT / "benchmarks")
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split(BEGIN)[1].split(END)[0]
    stale = "the README's results table is not what `evspec report --results benchmarks/` makes"
    assert section == f"\n{readme_table(rows)}\n", stale
    page = (ROOT / "benchmarks" / "RESULTS.md").read_text(encoding="utf-8")
    assert page == results_page(
        rows
    ), "benchmarks/RESULTS.md is stale; run `evspec report --results benchmarks/`"


def _summary(tmp_path: Path) -> None:
    def cfg(drafter, gamma, ratio, lo, hi):
        return {
            "drafter": drafter,
            "gamma": gamma,
            "vs_target": {"ratio_of_means": ratio, "ci95": [lo, hi]},
        }

    summary = {
        "label": "acceptance-replayed",
        "label_text": "acceptance-replayed (source: world)",
        "command": "evspec bench --replay t.json",
        "provenance": {
            "hardware": "NVIDIA H200 (driver 580)",
            "dtype": "bfloat16",
            "commit": "abcdef123456",
            "dirty": True,
        },
        "configs": [
            {"drafter": "none", "gamma": 0, "vs_target": None},
            cfg("head", 2, 1.30, 1.2, 1.4),
            cfg("head", 4, 1.10, 0.9, 1.3),
            cfg("head", 6, 0.95, 0.8, 1.1),
        ],
    }
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "summary.json").write_text(json.dumps(summary))


def _headlines(tmp_path: Path, rows: list[dict]) -> None:
    (tmp_path / "headlines.json").write_text(json.dumps({"rows": rows}))


def test_rows_from_a_summary_cover_every_gamma_and_carry_provenance(tmp_path):
    _summary(tmp_path)
    _headlines(
        tmp_path,
        [
            {
                "what": "heads",
                "report": "x.md",
                "from": {"summary": "run/summary.json", "drafters": ["head"]},
            }
        ],
    )
    (row,) = load_rows(tmp_path)
    assert (
        row.figure == "head 0.95–1.30× (γ 2, 4, 6; 95 % [0.80, 1.40])"
    )  # the worst γ is not dropped
    assert row.label == "acceptance-replayed (source: world)"
    assert (row.hardware, row.dtype, row.commit) == (
        "NVIDIA H200 (driver 580)",
        "bfloat16",
        "abcdef1 (dirty)",
    )
    assert row.command == "evspec bench --replay t.json"
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\n{BEGIN}\nold table\n{END}\n\nafter\n")
    res = CliRunner().invoke(app, ["report", "--results", str(tmp_path), "--readme", str(readme)])
    assert res.exit_code == 0, res.output
    text = readme.read_text()
    assert (
        "old table" not in text
        and "| heads | head 0.95–1.30×" in text
        and text.endswith("\nafter\n")
    )
    assert (tmp_path / "RESULTS.md").read_text().startswith("# Results")


@pytest.mark.parametrize(
    ("row", "match"),
    [
        (
            {
                "what": "w",
                "figure": "1×",
                "label": "measured",
                "hardware": "h",
                "dtype": "d",
                "command": "c",
            },
            "no commit",
        ),
        (
            {
                "what": "w",
                "figure": "1×",
                "label": "fast",
                "hardware": "h",
                "dtype": "d",
                "command": "c",
                "commit": "x",
                "report": "r",
            },
            "label must start",
        ),
        (
            {
                "what": "w",
                "report": "r",
                "from": {"summary": "run/summary.json", "drafters": ["other"]},
            },
            "no vs_target",
        ),
    ],
)
def test_bad_rows_are_refused_with_the_reason(tmp_path, row, match):
    _summary(tmp_path)
    _headlines(tmp_path, [row])
    with pytest.raises(ValueError, match=match):
        load_rows(tmp_path)


def test_markers_are_required(tmp_path):
    with pytest.raises(ValueError, match="markers"):
        splice("no markers here", "table")
    _summary(tmp_path)
    _headlines(
        tmp_path,
        [
            {
                "what": "w",
                "report": "r",
                "from": {"summary": "run/summary.json", "drafters": ["head"]},
            }
        ],
    )
    (tmp_path / "README.md").write_text("nothing")
    with pytest.raises(ValueError, match="markers"):
        write_results(tmp_path, tmp_path / "README.md")
