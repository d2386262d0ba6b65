"""The harness: resume after Ctrl-C and after a real kill, failures recorded, settings kept."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

import pytest
from bench_fakes import FakeBackend, make_items

from evspec.bench.config import BenchConfig
from evspec.bench.harness import run_bench
from evspec.bench.records import read_json, read_records
from evspec.bench.summary import summarize

SRC = Path(__file__).resolve().parents[2] / "src"


def _config(**kw) -> BenchConfig:
    # cold: no per-clip warm pass, so the calls counted below are the timed ones
    base = dict(drafters=("none", "fast", "slow"), gammas=(1, 4), warmup=0, dataset="fake",
                cache="cold")
    return BenchConfig(**{**base, **kw})


def _keys(run_dir: Path) -> list[str]:
    return [r["key"] for r in read_records(run_dir, latest_only=False)]


def test_plan_and_records(tmp_path):
    items = make_items(3)
    backend = FakeBackend(accept={"fast": 4, "slow": 1})
    out = run_bench(_config(), items, backend, tmp_path, progress=False)
    plan = _config().plan()
    assert plan == [("none", 0), ("hf-generate", 0), ("fast", 1), ("fast", 4), ("slow", 1), ("slow", 4)]
    assert out.written == 3 * len(plan) and out.failed == 0 and not out.interrupted
    recs = read_records(tmp_path)
    assert len(recs) == 18 and all(r["status"] == "ok" for r in recs)
    by = {(r["request_id"], r["drafter"], r["gamma"]): r for r in recs}
    r = by[("r0", "fast", 4)]
    assert r["kind"] == "spec" and r["matches_target"] is True and r["prefix_match"] == 1.0
    # 10 tokens: first from prefill, then a round of k=4 (+1) and one of k=3 (+1)
    assert r["rounds"] == [[4, 4, 4.0, 12.0], [3, 3, 3.0, 12.0]]
    assert r["alpha"] == 1.0 and r["tau"] == 4.5 and r["accepted_hist"] == [0, 0, 0, 1, 1]
    assert r["timings"]["total_ms"] == 20 + 7 + 24 and r["timings"]["decode_ms"] == 31
    assert by[("r0", "none", 0)]["matches_target"] is None  # the reference itself
    assert by[("r0", "hf-generate", 0)]["timings"]["total_ms"] == 250.0
    run = read_json(tmp_path / "run.json")
    assert run["label"] == "measured" and run["sessions"][0]["status"] == "complete"
    env = run["sessions"][0]["env"]
    assert {"libraries", "git", "device", "command", "python"} <= env.keys()
    assert env["libraries"]["torch"]
    # a second call has nothing to do
    again = run_bench(_config(), items, FakeBackend(), tmp_path, progress=False)
    assert again.written == 0 and again.skipped == 18


def test_resume_after_ctrl_c_loses_and_duplicates_nothing(tmp_path):
    items = make_items(4)
    first = FakeBackend(accept={"fast": 2}, interrupt_after=9)
    out = run_bench(_config(), items, first, tmp_path, progress=False)
    assert out.interrupted and out.written == 9
    assert len(_keys(tmp_path)) == 9
    with open(tmp_path / "records.jsonl", "ab") as f:  # plus a torn write, for good measure
        f.write(b'{"key": "r1|slow|4", "sta')
    second = FakeBackend(accept={"fast": 2})
    out2 = run_bench(_config(), items, second, tmp_path, progress=False)
    assert not out2.interrupted and out2.skipped == 9 and out2.written == 24 - 9
    keys = _keys(tmp_path)
    assert len(keys) == 24 and len(set(keys)) == 24  # every measurement exactly once
    # the resumed session did not redo finished work
    assert len(second.calls) == 15
    sessions = read_json(tmp_path / "run.json")["sessions"]
    assert [s["status"] for s in sessions] == ["interrupted", "complete"]
    assert sessions[1]["repaired_bytes"] > 0
    # records of the interrupted request written before its target-only answer existed get
    # their lossless check in the summary, from the tokens
    summaries = summarize(read_records(tmp_path))
    assert all(s.match_rate == 1.0 for s in summaries if s.kind != "target")
    spec = [r for r in read_records(tmp_path) if r["kind"] != "target"]
    assert sum(r["matches_target"] is None for r in spec) > 0


def test_resume_after_sigkill(tmp_path):
    script = textwrap.dedent(
        f"""
        import sys
        sys.path[:0] = [{str(SRC)!r}, {str(Path(__file__).parent)!r}]
        from bench_fakes import FakeBackend, make_items
        from evspec.bench.config import BenchConfig
        from evspec.bench.harness import run_bench
        cfg = BenchConfig(drafters=("none", "fast"), gammas=(1, 2, 4), warmup=0, dataset="fake",
                          cache="cold")
        run_bench(cfg, make_items(6), FakeBackend(accept={{"fast": 1}}, sleep=0.05), {str(tmp_path)!r},
                  progress=False)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], env={**os.environ, "PYTHONPATH": str(SRC)})
    rec = tmp_path / "records.jsonl"
    deadline = time.time() + 60
    while time.time() < deadline:
        if rec.exists() and len(rec.read_bytes().splitlines()) >= 5:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = len(_keys(tmp_path))
    assert 5 <= done < 30, "the kill must land mid-run"
    assert read_json(tmp_path / "run.json")["sessions"][0]["status"] == "running"  # killed, no cleanup
    cfg = BenchConfig(drafters=("none", "fast"), gammas=(1, 2, 4), warmup=0, dataset="fake",
                      cache="cold")
    out = run_bench(cfg, make_items(6), FakeBackend(accept={"fast": 1}), tmp_path, progress=False)
    keys = _keys(tmp_path)
    assert out.skipped == done and len(keys) == 30 and len(set(keys)) == 30


def test_failures_are_recorded_and_the_run_goes_on(tmp_path):
    items = make_items(4, bad={1})
    backend = FakeBackend(accept={"fast": 1}, fail={("question 2?", "fast")}, broken={"slow"})
    out = run_bench(_config(), items, backend, tmp_path, progress=False)
    recs = read_records(tmp_path)
    assert len(recs) == 24 and out.written == 24
    failed = [r for r in recs if r["status"] == "failed"]
    # clip 1 fails to load (6 measurements), clip 2's "fast" runs OOM (2), "slow" cannot be built (2 x 3 ok clips)
    assert Counter(r["error_type"] for r in failed) == {"FileNotFoundError": 6, "RuntimeError": 2, "ValueError": 6}
    assert out.failed == 14
    oom = next(r for r in failed if r["error_type"] == "RuntimeError")
    assert "out of memory" in oom["error"] and "RuntimeError: CUDA out" in oom["traceback"]
    assert backend.recovered >= 2
    ok = {(r["request_id"], r["drafter"], r["gamma"]) for r in recs if r["status"] == "ok"}
    assert ("r3", "fast", 4) in ok and ("r2", "none", 0) in ok
    # retry_failed re-runs only failures; the new record supersedes the old one
    fixed = FakeBackend(accept={"fast": 1})
    run_bench(_config(retry_failed=True), make_items(4), fixed, tmp_path, progress=False)
    assert len(fixed.calls) == 14
    assert all(r["status"] == "ok" for r in read_records(tmp_path))
    assert len(read_records(tmp_path)) == 24


def test_lossless_check_catches_a_mismatch(tmp_path):
    run_bench(_config(drafters=("fast",), gammas=(2,), hf_baseline=False), make_items(2),
              FakeBackend(accept={"fast": 1}, wrong_tokens={"fast"}), tmp_path, progress=False)
    spec = [r for r in read_records(tmp_path) if r["kind"] == "spec"]
    assert spec and all(r["matches_target"] is False and r["prefix_match"] == 0.9 for r in spec)


def test_warmup_runs_every_configuration_unrecorded(tmp_path):
    backend = FakeBackend(accept={"fast": 1})
    run_bench(_config(warmup=1, drafters=("fast",), gammas=(1, 2)), make_items(2), backend, tmp_path,
              progress=False)
    assert len(backend.calls) == 2 * 4 + 4  # 4 measured per request, plus one warm-up of each
    assert len(_keys(tmp_path)) == 8


def test_resume_refuses_other_settings(tmp_path):
    run_bench(_config(), make_items(1), FakeBackend(), tmp_path, progress=False)
    with pytest.raises(ValueError, match="temperature"):
        run_bench(_config(temperature=0.7), make_items(1), FakeBackend(), tmp_path, progress=False)
    # growing the drafter/gamma lists is allowed
    out = run_bench(_config(gammas=(1, 4, 8)), make_items(1), FakeBackend(), tmp_path, progress=False)
    assert out.written == 2 and out.skipped == 6


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        (dict(gammas=(0,)), "gammas"),
        (dict(drafters=()), "drafters"),
        (dict(drafters=("a", "a")), "twice"),
        (dict(drafters=("hf-generate",)), "hf-baseline"),
        (dict(temperature=-1.0), "temperature"),
        (dict(controlled_alpha=0.5, temperature=0.7), "greedy"),
        (dict(controlled_alpha=1.5), r"\[0, 1\]"),
        (dict(max_new_tokens=0), "max_new_tokens"),
    ],
)
def test_config_validation(kw, match):
    with pytest.raises(ValueError, match=match):
        BenchConfig(**kw)
