"""Records carry their provenance; a report refuses records of different commits or
hardware unless told to mix them."""

from __future__ import annotations

import json

import pytest
from bench_fakes import FakeBackend, make_items
from typer.testing import CliRunner

from evspec.bench.config import BenchConfig
from evspec.bench.env import provenance
from evspec.bench.harness import run_bench
from evspec.bench.records import RECORDS_FILE, read_records
from evspec.bench.report import build_report, check_provenance
from evspec.cli import app


def _run(tmp_path):
    cfg = BenchConfig(
        drafters=("none", "fast"), gammas=(2,), warmup=0, dataset="fake", cache="cold"
    )
    run_bench(cfg, make_items(2), FakeBackend(accept={"fast": 1}), tmp_path, progress=False)
    return read_records(tmp_path)


def test_every_record_carries_its_provenance(tmp_path):
    recs = _run(tmp_path)
    for r in recs:
        p = r["provenance"]
        assert {
            "hardware",
            "torch",
            "transformers",
            "triton",
            "commit",
            "dirty",
            "dtype",
            "engine",
            "numerics",
        } <= p.keys()
        assert p["dtype"] == "float32" and p["engine"] == "default" and p["torch"]
    env = {
        "device": {"gpus": [{"name": "NVIDIA H200"}], "driver": "580.1"},
        "libraries": {"triton": "3.5"},
        "git": {"commit": "abc", "dirty": True},
    }
    p = provenance(
        env,
        {
            "fast": True,
            "compile": True,
            "kernels": "triton",
            "dtype": "bfloat16",
            "numerics": "exact",
        },
    )
    assert p["hardware"] == "NVIDIA H200 (driver 580.1)" and p["engine"] == "fast+compile+triton"
    assert (p["commit"], p["dirty"], p["numerics"], p["triton"]) == ("abc", True, "exact", "3.5")


def test_report_refuses_mixed_commits_unless_told(tmp_path):
    recs = _run(tmp_path)
    path = tmp_path / RECORDS_FILE
    mixed = []
    for i, r in enumerate(recs):  # one request measured on another commit
        if r["request_id"] == "r1":
            r = {**r, "provenance": {**r["provenance"], "commit": "0" * 40}}
        mixed.append(json.dumps(r))
    path.write_text("\n".join(mixed) + "\n")
    with pytest.raises(ValueError, match="different commit"):
        build_report(tmp_path, plots=False)
    res = CliRunner().invoke(app, ["report", str(tmp_path), "--no-plots"])
    assert res.exit_code == 1 and "--allow-mixed" in res.output
    res = CliRunner().invoke(app, ["report", str(tmp_path), "--no-plots", "--allow-mixed"])
    assert res.exit_code == 0, res.output
    assert "mixed: " in (tmp_path / "report.md").read_text()
    assert check_provenance([{"provenance": None}]) is None  # older records: nothing to compare
