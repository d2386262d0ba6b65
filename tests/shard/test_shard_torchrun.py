"""Two CPU processes under torchrun (real tiny presets, real engine, the CLI) give the
same merged records as one process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from evspec.bench.records import read_json, read_records
from evspec.cli import app

SRC = Path(__file__).resolve().parents[2] / "src"
ARGS = ["--dataset", "random:6", "--target", "tiny-random", "--device", "cpu",
        "--drafters", "none,prompt-lookup", "--gamma", "2", "--max-new-tokens", "6", "--warmup", "0"]
VOLATILE = {"time", "session", "shard", "timings", "rounds"}


def _stable(run_dir: Path) -> list[dict]:
    """Records without timings; rounds reduced to (drafted, accepted)."""
    return [
        {**{k: v for k, v in r.items() if k not in VOLATILE}, "rounds": [x[:2] for x in r.get("rounds", [])]}
        for r in read_records(run_dir)
    ]


@pytest.mark.slow
def test_torchrun_two_processes_match_one_process(tmp_path):
    split = tmp_path / "split"
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(PYTHONPATH=str(SRC), HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone",
           "-m", "evspec", "bench", *ARGS, "--out", str(split)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert "shard 0 of 2: " in proc.stdout and "shard 1 of 2: " in proc.stdout
    # each process took its shard (and its would-be GPU) from torchrun's environment
    for i in range(2):
        env_rec = read_json(split / f"shard-{i:05d}-of-00002" / "run.json")["sessions"][0]["env"]
        assert env_rec["shard"] == {"index": i, "count": 2, "local_rank": i, "source": "torchrun"}

    res = CliRunner().invoke(app, ["merge", str(split), "--no-plots"])
    assert res.exit_code == 0, res.output
    assert "merged 2 shards: 6 requests, 18 records (0 failed)" in res.output
    assert (split / "merged" / "report.md").read_text().startswith("# evspec benchmark (measured)")

    single = tmp_path / "single"
    res = CliRunner().invoke(app, ["bench", *ARGS, "--out", str(single), "--no-report"])
    assert res.exit_code == 0, res.output
    merged, alone = _stable(split / "merged"), _stable(single)
    assert len(merged) == 18 and all(r["status"] == "ok" for r in merged)
    assert merged == alone
    assert {r["shard"] for r in read_records(split / "merged")} == {0, 1}


def test_acceptance_controlled_shards_draw_the_single_run_pattern(tmp_path):
    """The controlled mode's random pattern follows each request's position in the whole
    run, not in its shard: split and single runs accept exactly the same drafts."""
    from evspec.bench.config import BenchConfig
    from evspec.bench.merge import merge_runs
    from evspec.bench.run import ModelSpec, bench, load_backend
    from evspec.bench.shard import Shard

    spec = ModelSpec(target="tiny-random", device="cpu")
    backend = load_backend(spec, ("prompt-lookup",))
    cfg = BenchConfig(drafters=("prompt-lookup",), gammas=(3,), max_new_tokens=8, warmup=0,
                      hf_baseline=False, controlled_alpha=0.5, dataset="random:5")
    for shard in (Shard(0, 2), Shard(1, 2), None):
        out = tmp_path / ("single" if shard is None else "split")
        bench(cfg, out, spec, backend=backend, shard=shard, report=False, progress=False)
    merge_runs(tmp_path / "split")
    merged, alone = _stable(tmp_path / "split" / "merged"), _stable(tmp_path / "single")
    assert merged == alone
    spec_recs = [r for r in alone if r["kind"] == "spec"]
    assert 0 < sum(r["accepted"] for r in spec_recs) < sum(r["drafted"] for r in spec_recs)
