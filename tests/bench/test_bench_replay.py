"""Acceptance replay: traces from records, and a replayed run on tiny real models that
accepts exactly the recorded rounds, drafter by drafter."""

from __future__ import annotations

import itertools
import json

import pytest
from typer.testing import CliRunner

from evspec.bench.config import BenchConfig
from evspec.bench.records import read_json, read_records
from evspec.bench.replay import extract_traces, load_traces
from evspec.bench.run import ModelSpec, bench, load_backend
from evspec.cli import app

# recorded (drafted, accepted) per round, per request: position-dependent on purpose
TRACE = {
    "prompt-lookup": {
        "3": {"request_ids": ["a", "b"], "rounds": [[[3, 3], [3, 1], [3, 0]], [[3, 2], [3, 3]]]}
    },
    "self": {"3": {"request_ids": ["a"], "rounds": [[[3, 0], [3, 1]]]}},
}


def _write_trace(path, drafters=TRACE):
    path.write_text(
        json.dumps(
            {
                "format": "evspec-acceptance-trace",
                "version": 1,
                "source": "hand-made test trace",
                "drafters": drafters,
            }
        )
    )
    return path


def test_replay_accepts_exactly_the_recorded_rounds(tmp_path):
    trace = _write_trace(tmp_path / "trace.json")
    spec = ModelSpec(target="tiny-random", device="cpu")
    backend = load_backend(spec, ("prompt-lookup", "self"))
    cfg = BenchConfig(
        drafters=("prompt-lookup", "self"),
        gammas=(3,),
        max_new_tokens=16,
        warmup=0,
        hf_baseline=False,
        replay=str(trace),
        dataset="random:3",
    )
    bench(cfg, tmp_path / "run", spec, backend=backend, report=True, progress=False)
    recs = read_records(tmp_path / "run")
    spec_recs = [r for r in recs if r["kind"] == "spec"]
    assert len(spec_recs) == 6 and all(r["status"] == "ok" for r in spec_recs), spec_recs[0].get(
        "error"
    )
    doc = load_traces(trace)
    index = {f"random-{i}": i for i in range(3)}
    for r in spec_recs:
        assert r["label"] == "acceptance-replayed" and r["matches_target"]
        want = doc.for_drafter(r["drafter"]).stream(3, index[r["request_id"]])
        rounds = [(int(k), int(n)) for k, n, *_ in r["rounds"]]
        assert len(rounds) >= 2
        for (k, n), (_, n_rec) in zip(rounds, want):
            assert n == min(n_rec, k), (r["key"], rounds)
        assert r["timings"]["draft_ms"] > 0  # the drafter's real compute ran
    run = read_json(tmp_path / "run" / "run.json")
    assert run["label"] == "acceptance-replayed" and run["replay_source"] == "hand-made test trace"
    report = (tmp_path / "run" / "report.md").read_text()
    assert report.startswith(
        "# evspec benchmark (acceptance-replayed (source: hand-made test trace))"
    )


def test_replay_refuses_a_gamma_or_drafter_the_trace_lacks(tmp_path):
    trace = _write_trace(tmp_path / "trace.json")
    doc = load_traces(trace)
    with pytest.raises(ValueError, match="no γ = 4 .*recorded: 3"):
        next(doc.for_drafter("self").stream(4, 0))
    with pytest.raises(ValueError, match="no drafter 'event-head'"):
        doc.for_drafter("event-head")
    bad = _write_trace(
        tmp_path / "bad.json", {"x": {"2": {"request_ids": ["a"], "rounds": [[[2, 3]]]}}}
    )
    with pytest.raises(ValueError, match="accepted > drafted"):
        load_traces(bad)
    with pytest.raises(ValueError, match="greedy"):
        BenchConfig(drafters=("self",), replay=str(trace), temperature=0.5)


def test_traces_come_from_measured_records_only(tmp_path):
    records = [
        {
            "status": "ok",
            "kind": "spec",
            "drafter": "h",
            "gamma": 2,
            "request_id": "q0",
            "controlled_alpha": None,
            "rounds": [[2, 2, 0.1, 1.0], [2, 0, 0.1, 1.0]],
        },
        {
            "status": "ok",
            "kind": "spec",
            "drafter": "h",
            "gamma": 2,
            "request_id": "q1",
            "controlled_alpha": 0.5,
            "rounds": [[2, 1, 0.1, 1.0]],
        },  # acceptance-controlled: not a measurement of acceptance
        {
            "status": "ok",
            "kind": "spec",
            "drafter": "h",
            "gamma": 2,
            "request_id": "q2",
            "controlled_alpha": None,
            "label": "acceptance-replayed",
            "rounds": [[2, 1, 0.1, 1.0]],
        },
        {"status": "failed", "kind": "spec", "drafter": "h", "gamma": 2, "request_id": "q3"},
        {
            "status": "ok",
            "kind": "target",
            "drafter": "none",
            "gamma": 0,
            "request_id": "q0",
            "rounds": [],
        },
    ]
    doc = extract_traces(records, "unit test")
    assert doc["drafters"] == {"h": {"2": {"request_ids": ["q0"], "rounds": [[[2, 2], [2, 0]]]}}}
    with pytest.raises(ValueError, match="source"):
        extract_traces(records, " ")


def test_trace_cli_round_trip(tmp_path):
    run = tmp_path / "run"
    res = CliRunner().invoke(
        app,
        [
            "bench",
            "--dataset",
            "random:2",
            "--out",
            str(run),
            "--target",
            "tiny-random",
            "--device",
            "cpu",
            "--drafters",
            "none,self",
            "--gamma",
            "2",
            "--max-new-tokens",
            "6",
            "--warmup",
            "0",
            "--no-hf-baseline",
            "--no-report",
        ],
    )
    assert res.exit_code == 0, res.output
    out = tmp_path / "trace.json"
    res = CliRunner().invoke(app, ["trace", str(run), "--out", str(out), "--source", "tiny self"])
    assert res.exit_code == 0, res.output
    doc = load_traces(out)
    measured = [r for r in read_records(run) if r["drafter"] == "self"]
    stream = doc.for_drafter("self").stream(2, 0)
    recorded = [(int(k), int(n)) for r in measured for k, n, *_ in r["rounds"]]
    assert list(itertools.islice(stream, len(recorded))) == recorded
    assert json.loads(out.read_text())["measured_by"]["git"]["commit"]  # where it was measured
