"""Shards from torchrun's environment and from --num-chunks/--chunk-idx; the partition."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from evspec.bench.shard import (
    Shard,
    parse_shard_dir,
    partition,
    select_device,
    shard_from_env_or_args,
    shard_of,
)

SRC = Path(__file__).resolve().parents[2] / "src"


@dataclass
class _Item:
    request_id: str
    clip_id: str | None = None


def test_shard_from_torchrun_environment():
    env = {"RANK": "5", "WORLD_SIZE": "8", "LOCAL_RANK": "1"}
    assert shard_from_env_or_args(env=env) == Shard(5, 8, 1, "torchrun")
    assert shard_from_env_or_args(env={}) == Shard(0, 1, None, "single")
    assert shard_from_env_or_args(3, 1, env={}) == Shard(1, 3, None, "args")
    # an array job of torchrun launches: chunk 2 of 3, rank 1 of 4 -> shard 9 of 12
    both = shard_from_env_or_args(3, 2, env={"RANK": "1", "WORLD_SIZE": "4", "LOCAL_RANK": "1"})
    assert (both.index, both.count, both.source) == (9, 12, "torchrun+args")
    assert Shard(9, 12).name == "shard-00009-of-00012" and parse_shard_dir("shard-00009-of-00012") == (9, 12)
    assert parse_shard_dir("merged") is None


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        ((4, None), {}, "go together"),
        ((4, 4), {}, "--chunk-idx 4 must be in 0..3"),
        ((0, 0), {}, "--num-chunks must be >= 1"),
        ((None, None), {"RANK": "1"}, "only RANK is set"),
        ((None, None), {"RANK": "2", "WORLD_SIZE": "2"}, "RANK=2 must be in 0..WORLD_SIZE-1"),
        ((None, None), {"RANK": "x", "WORLD_SIZE": "2"}, "RANK='x' is not an integer"),
    ],
)
def test_bad_shard_settings_say_how_to_fix_them(args, env, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(".", r"\.")):
        shard_from_env_or_args(*args, env=env)


def test_partition_is_disjoint_complete_grouped_and_stable():
    items = [_Item(f"clip{c}#{q}", f"clip{c}") for c in range(40) for q in range(3)]
    parts = [partition(items, Shard(i, 4)) for i in range(4)]
    ids = [it.request_id for part in parts for it in part]
    assert sorted(ids) == sorted(it.request_id for it in items) and len(ids) == len(set(ids))
    assert all(len(p) > 0 for p in parts)
    for part in parts:  # questions of a clip stay in one shard, in dataset order
        clips = {it.clip_id for it in part}
        assert [it for it in items if it.clip_id in clips] == part
    # growing the dataset never moves an item to another shard (resume after --limit grows)
    more = items + [_Item(f"clip{c}#0", f"clip{c}") for c in range(40, 80)]
    for i in range(4):
        assert partition(more, Shard(i, 4))[: len(parts[i])] == parts[i]
    # items without a clip partition by request id
    assert partition([_Item("a"), _Item("b")], Shard(0, 1)) == [_Item("a"), _Item("b")]


def test_partition_is_the_same_in_every_process():
    """A salted builtin hash would differ between processes; the rule is pinned here
    because shard plans of runs already on disk depend on it."""
    keys = [f"random-{i}" for i in range(8)]
    here = [shard_of(k, 3) for k in keys]
    code = f"from evspec.bench.shard import shard_of; print([shard_of(k, 3) for k in {keys!r}])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(SRC), "PYTHONHASHSEED": "123"})
    assert out.stdout.strip() == str(here)
    assert here == [1, 0, 2, 2, 2, 1, 0, 2]


def test_select_device_uses_local_rank_only_when_asked():
    under = Shard(3, 8, local_rank=3, source="torchrun")
    assert select_device("auto", under, cuda_count=4) == "cuda:3"
    assert select_device("cpu", under, cuda_count=4) == "cpu"  # an explicit device wins
    assert select_device("auto", under, cuda_count=0) == "auto"  # no GPU: the usual default
    assert select_device("auto", Shard(1, 2, source="args"), cuda_count=4) == "auto"  # no launcher
    with pytest.raises(ValueError, match="LOCAL_RANK=3 but this node has 2 visible GPU"):
        select_device("auto", under, cuda_count=2)
