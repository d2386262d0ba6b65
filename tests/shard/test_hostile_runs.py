"""Careless use of run folders: two writers on one folder, ``merge R --out R``, ``--out``
naming a file, and a corrupt record in the middle of ``records.jsonl``.  The second writer
is refused naming the first (pid, host), nothing is measured twice, and a corrupt record is
moved aside and measured again instead of blocking the run."""

from __future__ import annotations

import json
import os
import signal
import socket
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
from evspec.bench.records import CorruptRecordWarning, read_records
from evspec.bench.report import build_report
from evspec.bench.run import ModelSpec, bench
from evspec.bench.shard import Shard
from evspec.cli import app
from evspec.data.runlock import LOCK_FILE, FolderInUse, run_lock

SRC = Path(__file__).resolve().parents[2] / "src"
CONFIG = BenchConfig(drafters=("none", "pl"), gammas=(1, 3), warmup=0, dataset="random:5")
KEYS = 5 * 4  # requests x (none + pl at two γ + the HF baseline)
MODELS = ModelSpec(device="cpu")  # built once: its first build imports the model code (slow)


def _run(out: Path, shard: Shard | None = None):
    return bench(CONFIG, out, MODELS, backend=ShardFakeBackend(), shard=shard, report=False,
                 progress=False)


def _slow_bench(out: Path) -> subprocess.Popen:
    """A second process benchmarking into ``out`` slowly (0.5 s a measurement)."""
    script = textwrap.dedent(
        f"""
        import sys
        sys.path[:0] = [{str(SRC)!r}, {str(Path(__file__).parent)!r}]
        from shard_fakes import ShardFakeBackend
        from evspec.bench.config import BenchConfig
        from evspec.bench.run import ModelSpec, bench
        cfg = BenchConfig(drafters=("none", "pl"), gammas=(1, 3), warmup=0, dataset="random:5")
        bench(cfg, {str(out)!r}, ModelSpec(device="cpu"), backend=ShardFakeBackend(sleep=0.5),
              report=False, progress=False)
        """
    )
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    return subprocess.Popen([sys.executable, "-c", script], env=env)


def _wait_for_records(path: Path, n: int, proc: subprocess.Popen) -> None:
    deadline = time.time() + 60
    while time.time() < deadline and proc.poll() is None:
        if path.exists() and len(path.read_bytes().splitlines()) >= n:
            return
        time.sleep(0.02)
    raise AssertionError("the first bench never got going")


def test_second_bench_on_a_busy_folder_is_refused_naming_the_first(tmp_path: Path) -> None:
    proc = _slow_bench(tmp_path)
    try:
        _wait_for_records(tmp_path / "records.jsonl", 2, proc)
        holder = rf"in use by `evspec bench` \(pid {proc.pid} on {socket.gethostname()}, since "
        with pytest.raises(FolderInUse, match=holder + ".*use another --out"):
            _run(tmp_path)
        res = CliRunner().invoke(app, ["bench", "--dataset", "random:5", "--out", str(tmp_path),
                                       "--device", "cpu"])
        assert res.exit_code == 1 and f"pid {proc.pid}" in res.output, res.output
        assert "Traceback" not in res.output
    finally:
        proc.send_signal(signal.SIGKILL)  # a killed holder leaves no stale lock
        proc.wait()
    outcome = _run(tmp_path)
    records = read_records(tmp_path, latest_only=False)
    assert len(records) == KEYS == len({r["key"] for r in records})  # nothing measured twice
    assert outcome.written + outcome.skipped == KEYS


def test_every_writer_takes_the_lock(tmp_path: Path) -> None:
    from evspec.training.heads.collect import CollectConfig, collect, collect_lock_name
    from evspec.training.heads.train import TrainConfig, train
    from evspec.data.dsec import DsecBuildConfig, build_dsec_clips
    from evspec.training.world.config import WorldTrainConfig
    from evspec.training.world.loop import train_world_model

    busy = tmp_path / "busy"
    part = collect_lock_name(CollectConfig(split="train"))
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import sys
            from evspec.data.runlock import run_lock
            with run_lock({str(busy)!r}, "x"), run_lock({str(busy)!r}, "x", name={part!r}):
                print("held", flush=True)
                sys.stdin.read()
            """)],
        env={**os.environ, "PYTHONPATH": str(SRC)}, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        calls = {
            "bench": lambda: _run(busy),
            "collect": lambda: collect(CollectConfig(split="train"), None, None,
                                       tmp_path / "m.json", busy),
            "train": lambda: train(TrainConfig(kind="event-head"), tmp_path / "data", busy),
            "dsec": lambda: build_dsec_clips(tmp_path / "dsec", busy,
                                             DsecBuildConfig(duration_us=50_000)),
            "world train": lambda: train_world_model(WorldTrainConfig(
                role="target", data=tmp_path / "w", out=busy, preset="world-micro", device="cpu")),
        }
        refused = rf"busy: in use by `evspec x` \(pid {holder.pid}"
        for call in calls.values():
            with pytest.raises(FolderInUse, match=refused):
                call()
        # another collect shard of the same folder is free to run (it fails later, on the data)
        with pytest.raises(Exception) as other:
            collect(CollectConfig(split="val"), None, None, tmp_path / "m.json", busy)
        assert not isinstance(other.value, FolderInUse)
    finally:
        holder.stdin.close()
        holder.wait()
    with run_lock(busy, "bench"), run_lock(busy, "bench"):  # re-entrant in one process
        assert json.loads((busy / LOCK_FILE).read_text())["pid"] == os.getpid()


def test_merge_refuses_its_own_input_and_busy_shards(tmp_path: Path) -> None:
    for i in range(2):
        _run(tmp_path, Shard(i, 2))
    with pytest.raises(MergeError, match="is the folder being merged"):
        merge_runs(tmp_path, tmp_path)
    res = CliRunner().invoke(app, ["merge", str(tmp_path), "--out", str(tmp_path), "--no-report"])
    assert res.exit_code == 1 and res.output.startswith("error: --out ")
    assert "another --out" in res.output
    assert not (tmp_path / "records.jsonl").exists() and not (tmp_path / "run.json").exists()
    with run_lock(tmp_path / "shard-00001-of-00002", "bench"):
        pass  # released: the shards can still resume
    merge_runs(tmp_path)
    assert len(read_records(tmp_path / "merged")) == KEYS


def test_out_that_is_a_file_fails_before_any_model_loads(tmp_path: Path, monkeypatch) -> None:
    import evspec.bench.run as run

    def no_loading(*args, **kwargs):
        raise AssertionError("models loaded before --out was checked")

    monkeypatch.setattr(run, "load_backend", no_loading)
    out = tmp_path / "results.txt"
    out.write_text("mine")
    args = ["bench", "--dataset", "random:2", "--out", str(out), "--device", "cpu"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 1, res.output
    assert f"--out {out}: is a file, not a run folder" in res.output
    assert out.read_text() == "mine"


def test_corrupt_middle_record_is_quarantined_and_measured_again(tmp_path: Path) -> None:
    _run(tmp_path)
    path = tmp_path / "records.jsonl"
    lines = path.read_bytes().splitlines(keepends=True)
    lost = json.loads(lines[3])["key"]
    lines[3] = b'{"key": "broken' + b"\x00" * 5 + b"\n"  # a bad complete line mid-file
    lines[6] = b"[1, 2]\n"  # valid JSON, but not a record
    path.write_bytes(b"".join(lines))
    two = r"records.jsonl: 2 corrupt record line\(s\) \(lines 4, 7;"
    with pytest.warns(CorruptRecordWarning, match=two):
        report = build_report(tmp_path, plots=False)  # reports what is readable
    assert report.is_file()
    moved = r"moved to .*records\.quarantine\.jsonl; they are measured again"
    with pytest.warns(CorruptRecordWarning, match=moved):
        outcome = _run(tmp_path)
    assert outcome.written == 2 and outcome.skipped == KEYS - 2
    records = read_records(tmp_path, latest_only=False)
    keys = [r["key"] for r in records]
    assert len(keys) == KEYS == len(set(keys)) and lost in keys
    quarantine = (tmp_path / "records.quarantine.jsonl").read_bytes().splitlines()
    assert quarantine == [lines[3].rstrip(b"\n"), lines[6].rstrip(b"\n")]


def test_report_on_a_record_without_drafter_names_the_line(tmp_path: Path) -> None:
    _run(tmp_path)
    path = tmp_path / "records.jsonl"
    lines = path.read_text().splitlines(keepends=True)
    rec = json.loads(lines[2])
    del rec["drafter"]
    lines[2] = json.dumps(rec) + "\n"
    path.write_text("".join(lines))
    with pytest.warns(CorruptRecordWarning, match=r"records.jsonl: 1 corrupt record line\(s\) "
                                                  r"\(lines 3; line 3: no 'drafter' \(str\)\)"):
        res = CliRunner().invoke(app, ["report", str(tmp_path), "--no-plots"])
    assert res.exit_code == 0 and "Traceback" not in res.output, res.output
