"""The pipelined schedule in the bench: its counters and the schedule reach the records,
and the report shows the schedule, the model placement and a pipeline table."""

from __future__ import annotations

from typer.testing import CliRunner

from evspec.bench.records import read_records
from evspec.bench.report import render_markdown
from evspec.bench.summary import summarize
from evspec.cli import app

COUNTERS = {"predraft_launched", "predraft_used", "predraft_discarded", "cold_rounds", "predraft_ms",
            "draft_busy_ms", "fallback", "target_device", "draft_device"}


def test_cli_bench_pipelined_records_and_reports_counters(tmp_path):
    out = tmp_path / "run"
    args = ["bench", "--dataset", "random:2", "--out", str(out), "--target", "tiny-random",
            "--device", "cpu", "--drafters", "none,self,prompt-lookup", "--gamma", "2",
            "--max-new-tokens", "8", "--warmup", "0", "--no-hf-baseline", "--schedule", "pipelined"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    recs = read_records(out)
    assert len(recs) == 6 and all(r["status"] == "ok" for r in recs), [r.get("error") for r in recs]
    assert all(r["schedule"] == "pipelined" for r in recs)
    spec = [r for r in recs if r["kind"] == "spec"]
    for r in spec:
        c = r["pipeline"]
        assert COUNTERS <= set(c), c
        transitions = len(r["rounds"]) - 1
        assert c["predraft_used"] + c["predraft_discarded"] + c["cold_rounds"] == transitions
        assert c["target_device"] == "cpu"
    selfs = [r["pipeline"] for r in spec if r["drafter"] == "self"]
    assert sum(c["predraft_used"] for c in selfs) > 0  # a perfect drafter's pre-drafts are used
    assert all("pipeline" not in r for r in recs if r["kind"] == "target")  # target-only: no pipeline

    text = (out / "report.md").read_text()
    assert "* schedule: pipelined; target on cpu, draft on cpu" in text
    assert "## Pipeline (pre-drafting)" in text
    launched = sum(c["predraft_launched"] for c in selfs)
    used = sum(c["predraft_used"] for c in selfs)
    discarded = sum(c["predraft_discarded"] for c in selfs)
    cold = sum(c["cold_rounds"] for c in selfs)
    assert f"| self | 2 | 2 | {launched} | {used} | {discarded} |" in text
    row = next(line for line in text.splitlines() if line.startswith("| self | 2 | 2 |"))
    assert row.split(" | ")[7] == str(cold)


def test_report_of_a_sequential_run_has_no_pipeline_table():
    recs = [
        {"request_id": "r0", "drafter": "none", "gamma": 0, "kind": "target", "status": "ok",
         "schedule": "sequential", "new_tokens": 3, "tokens": [1, 2, 3],
         "timings": {"total_ms": 30.0, "decode_ms": 20.0}, "rounds": [[0, 0, 0.0, 10.0]] * 2},
        {"request_id": "r0", "drafter": "pl", "gamma": 2, "kind": "spec", "status": "ok",
         "schedule": "sequential", "new_tokens": 3, "tokens": [1, 2, 3], "matches_target": True,
         "prefix_match": 1.0, "timings": {"total_ms": 25.0, "decode_ms": 15.0},
         "rounds": [[2, 1, 0.0, 15.0]]},
    ]
    run = {"identity": {"temperature": 0}, "backend": {"device_type": "cuda", "draft_model": None,
                                                        "placement": {"target": "cuda:0", "draft": "cuda:1"}}}
    text = render_markdown(run, recs, summarize(recs), [])
    assert "* schedule: sequential; target on cuda:0, draft on cuda:1" in text
    assert "Pipeline" not in text
