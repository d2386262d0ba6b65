"""Split benchmark runs (fake backend): merged == one process, resume after a kill, and
merge refusing missing, unfinished, overlapping or mismatched shards."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from shard_fakes import ShardFakeBackend
from typer.testing import CliRunner

from evspec.bench.config import BenchConfig
from evspec.bench.merge import MergeError, merge_runs
from evspec.bench.records import read_json, read_records
from evspec.bench.report import build_report
from evspec.bench.run import ModelSpec, bench
from evspec.bench.shard import Shard
from evspec.bench.shard_plan import ShardPlan
from evspec.cli import app

SRC = Path(__file__).resolve().parents[2] / "src"
MODELS = ModelSpec(device="cpu")
VOLATILE = {"time", "session", "shard", "timings"}


def _config(**kw) -> BenchConfig:
    base = dict(drafters=("none", "pl"), gammas=(1, 3), warmup=0, dataset="random:7")
    return BenchConfig(**{**base, **kw})


def _run(out: Path, shard: Shard | None = None, **kw):
    return bench(_config(**kw), out, MODELS, backend=ShardFakeBackend(), shard=shard, report=False, progress=False)


def _stable(run_dir: Path) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in VOLATILE} for r in read_records(run_dir)]


@pytest.fixture(scope="module")
def single(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("single")
    _run(out)
    return out


@pytest.fixture(scope="module")
def split(tmp_path_factory) -> Path:
    """random:7 over 3 shards, run one after the other (the processes never talk)."""
    out = tmp_path_factory.mktemp("split")
    for i in range(3):
        outcome = _run(out, Shard(i, 3))
        assert outcome.run_dir == out / f"shard-{i:05d}-of-00003" and not outcome.interrupted
    return out


def test_split_run_merges_into_the_single_process_run(single, split, tmp_path):
    plans = [ShardPlan.read(split / f"shard-{i:05d}-of-00003" / "shard.json") for i in range(3)]
    assert sorted(u for p in plans for u in p.units) == sorted(f"random-{i}" for i in range(7))
    assert all(p.total == 7 and p.runs == (("none", 0), ("hf-generate", 0), ("pl", 1), ("pl", 3)) for p in plans)
    with pytest.raises(FileNotFoundError, match="evspec merge"):
        build_report(split)  # the parent of the shards is not a run
    summary = merge_runs(split, tmp_path / "merged")
    assert (summary.shards, summary.requests, summary.records, summary.failed) == (3, 7, 28, 0)
    # record for record (and in the same order) what one process wrote
    assert _stable(tmp_path / "merged") == _stable(single)
    shards = {r["request_id"]: r["shard"] for r in read_records(tmp_path / "merged")}
    assert all(f"random-{i}" in plans[s].units for i, s in ((int(k.split("-")[1]), v) for k, v in shards.items()))
    run = read_json(tmp_path / "merged" / "run.json")
    assert run["merged"]["shards"] == 3 and len(run["sessions"]) == 3
    assert [s["env"]["shard"]["index"] for s in run["sessions"]] == [0, 1, 2]
    report = build_report(tmp_path / "merged", plots=False).read_text()
    assert "7 requests, 28 measurements (0 failed)" in report and "merged from 3 shards" in report
    # merging again gives the same result (the merged folder is rewritten, not appended to)
    merge_runs(split, tmp_path / "merged")
    assert _stable(tmp_path / "merged") == _stable(single)


def test_a_shard_with_no_requests_still_merges(tmp_path):
    for i in range(2):  # random:1 -> one shard gets nothing
        _run(tmp_path, Shard(i, 2), dataset="random:1")
    plans = [ShardPlan.read(tmp_path / f"shard-{i:05d}-of-00002" / "shard.json") for i in range(2)]
    assert sorted(len(p.units) for p in plans) == [0, 1]
    assert merge_runs(tmp_path).records == 4


def test_layouts_do_not_mix(single, split, tmp_path):
    with pytest.raises(ValueError, match="holds the shards of a 3-way split"):
        _run(split)  # one process into a split run
    with pytest.raises(ValueError, match="already holds a 3-way split"):
        _run(split, Shard(0, 4))
    with pytest.raises(ValueError, match="is a single-process run folder"):
        _run(single, Shard(0, 2))
    copy = tmp_path / "split"
    shutil.copytree(split, copy)
    with pytest.raises(ValueError, match="started with other settings"):
        _run(copy, Shard(1, 3), max_new_tokens=3)


def _merge_cli(run_dir: Path) -> str:
    res = CliRunner().invoke(app, ["merge", str(run_dir), "--no-report"])
    assert res.exit_code == 1, res.output
    return res.output


def _broken(split: Path, tmp_path: Path, name: str) -> Path:
    copy = tmp_path / name
    shutil.copytree(split, copy)
    return copy


def test_merge_refuses_missing_and_unfinished_shards(split, tmp_path):
    gone = _broken(split, tmp_path, "gone")
    shutil.rmtree(gone / "shard-00002-of-00003")
    out = _merge_cli(gone)
    assert "1 of 3 shards are missing (shard-00002-of-00003)" in out and "--chunk-idx 2" in out

    cut = _broken(split, tmp_path, "cut")
    rec = cut / "shard-00001-of-00003" / "records.jsonl"
    lines = rec.read_text().splitlines(keepends=True)
    rec.write_text("".join(lines[:-1]))
    lost = json.loads(lines[-1])["key"]
    out = _merge_cli(cut)
    assert "shard-00001-of-00003 has not finished: 1 planned measurement(s) missing" in out and lost in out


def test_merge_refuses_overlapping_shards(split, tmp_path):
    dup = _broken(split, tmp_path, "dup")
    first = (dup / "shard-00000-of-00003" / "records.jsonl").read_text().splitlines()[0]
    with open(dup / "shard-00002-of-00003" / "records.jsonl", "a") as f:
        f.write(first + "\n")
    out = _merge_cli(dup)
    assert "shard-00000-of-00003 and shard-00002-of-00003 both recorded 1 measurement(s)" in out
    assert json.loads(first)["key"] in out

    over = _broken(split, tmp_path, "over")
    p0 = ShardPlan.read(over / "shard-00000-of-00003" / "shard.json")
    path1 = over / "shard-00001-of-00003" / "shard.json"
    data = json.loads(path1.read_text())
    data["units"].append(p0.units[0])
    data["positions"].append(p0.positions[0])
    path1.write_text(json.dumps(data))
    with pytest.raises(MergeError, match=f"both planned requests {p0.units[0]}"):
        merge_runs(over)

    mixed = _broken(split, tmp_path, "mixed")
    _run(mixed / "other", Shard(0, 2))
    shutil.move(mixed / "other" / "shard-00000-of-00002", mixed / "shard-00000-of-00002")
    assert "mixes splits of different sizes: 2 (1 folders), 3 (3 folders)" in _merge_cli(mixed)


def test_merge_refuses_shards_that_ran_something_else(split, tmp_path):
    grown = _broken(split, tmp_path, "grown")
    _run(grown, Shard(1, 3), gammas=(1, 3, 5))  # only shard 1 grew its γ list
    out = _merge_cli(grown)
    assert "shard-00001-of-00003 ran something else than shard-00000-of-00003 (runs:" in out
    other = tmp_path / "other"
    for i in range(3):
        _run(other, Shard(i, 3), dataset="random:7" if i else "random:8")
    with pytest.raises(MergeError, match="shard-00001-of-00003 ran something else"):
        merge_runs(other)


def test_a_killed_shard_resumes_and_then_merges(single, tmp_path):
    _run(tmp_path, Shard(0, 2))
    shard1 = tmp_path / "shard-00001-of-00002"
    script = textwrap.dedent(
        f"""
        import sys
        sys.path[:0] = [{str(SRC)!r}, {str(Path(__file__).parent)!r}]
        from shard_fakes import ShardFakeBackend
        from evspec.bench.config import BenchConfig
        from evspec.bench.run import ModelSpec, bench
        from evspec.bench.shard import Shard
        cfg = BenchConfig(drafters=("none", "pl"), gammas=(1, 3), warmup=0, dataset="random:7")
        bench(cfg, {str(tmp_path)!r}, ModelSpec(device="cpu"), backend=ShardFakeBackend(sleep=0.15),
              shard=Shard(1, 2), report=False, progress=False)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], env={**os.environ, "PYTHONPATH": str(SRC)})
    rec = shard1 / "records.jsonl"
    deadline = time.time() + 60
    while time.time() < deadline and proc.poll() is None:
        if rec.exists() and len(rec.read_bytes().splitlines()) >= 3:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = len(read_records(shard1))
    planned = len(ShardPlan.read(shard1 / "shard.json").expected_keys())
    assert 3 <= done < planned, "the kill must land mid-shard"
    with pytest.raises(MergeError, match="shard-00001-of-00002 has not finished"):
        merge_runs(tmp_path)
    outcome = _run(tmp_path, Shard(1, 2))  # the same command again: only the rest is done
    assert outcome.skipped == done and outcome.written == planned - done
    merge_runs(tmp_path)
    assert _stable(tmp_path / "merged") == _stable(single)
    sessions = read_json(shard1 / "run.json")["sessions"]
    assert [s["status"] for s in sessions] == ["running", "complete"]  # killed, then resumed
