"""``evspec merge`` on a collect data folder written in shards (the real chunk store):
verified when complete, refused when a shard is missing, unfinished or doubled."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from evspec.training.heads.store import ChunkWriter, CollectedData, Example
from evspec.bench.merge import MergeError
from evspec.bench.merge_collect import verify_collect
from evspec.bench.shard import Shard
from evspec.bench.shard_plan import collect_plan_name, plan_collect_shard
from evspec.cli import app

HEADER = {"dims": {"target_hidden": 4, "draft_hidden": 3}, "max_new_tokens": 4, "store_dtype": "float32"}
KEYS = [f"clip{c}#{q}" for c in range(6) for q in range(2)]


def _example(key: str) -> Example:
    m = 1 + len(key) % 3  # answer length
    g = torch.Generator().manual_seed(len(key))
    return Example(
        key=key, clip_id=key.split("#")[0], question=f"q {key}?", qtype="describe", split="train",
        answer_ids=torch.arange(m), target_hidden=torch.randn(m, 4, generator=g),
        topk_ids=torch.zeros(m, 2, dtype=torch.long), topk_logp=torch.zeros(m, 2),
        draft_answer_ids=torch.arange(m), draft_hidden=torch.randn(m, 3, generator=g),
        draft_top1=torch.zeros(m, dtype=torch.long), draft_prompt_ids=torch.tensor([1, -200, 5]),
        event_embeds=torch.randn(2, 3, generator=g),
    )


class _Key:
    """What collect partitions: an item with a key and a clip."""

    def __init__(self, key: str) -> None:
        self.key, self.clip_id = key, key.split("#")[0]


def _collect_shard(folder: Path, shard: Shard, *, keep: int | None = None, extra: tuple[str, ...] = ()) -> list[str]:
    """What a collect shard does: plan, then chunks (``keep`` = stop early, a kill)."""
    mine = [it.key for it in plan_collect_shard(folder, "train", [_Key(k) for k in KEYS], shard, HEADER)]
    writer = ChunkWriter(folder, "train", shard.index, HEADER, chunk_size=2)
    for key in [*mine[:keep], *extra]:
        writer.add(_example(key))
    writer.flush()
    return mine


def test_a_complete_sharded_collect_verifies(tmp_path):
    mine = [_collect_shard(tmp_path, Shard(i, 3)) for i in range(3)]
    assert sorted(k for m in mine for k in m) == sorted(KEYS) and all(mine)
    res = CliRunner().invoke(app, ["merge", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert "train: 12 examples from 3 shards, all planned present" in res.output
    merged = json.loads((tmp_path / "merged.json").read_text())
    assert merged["splits"]["train"] == {"shards": 3, "examples": 12, "planned": 12, "extra": 0}
    data = CollectedData.open(tmp_path)  # the readers see every shard as one data set
    assert sorted(e.key for e in data.examples("train")) == sorted(KEYS)


def test_missing_unfinished_and_doubled_collect_shards_are_refused(tmp_path):
    gone = tmp_path / "gone"
    _collect_shard(gone, Shard(0, 2))
    with pytest.raises(MergeError, match=r"1 of 2 shards never started \(shard-00001-of-00002\)"):
        verify_collect(gone)

    cut = tmp_path / "cut"
    _collect_shard(cut, Shard(0, 2))
    part = _collect_shard(cut, Shard(1, 2), keep=2)
    with pytest.raises(MergeError, match=f"shard-00001-of-00002 has not finished: {len(part) - 2} planned"):
        verify_collect(cut)

    dup = tmp_path / "dup"
    first = _collect_shard(dup, Shard(0, 2))
    _collect_shard(dup, Shard(1, 2), extra=(first[0],))
    with pytest.raises(MergeError, match=f"shard-00000-of-00002 and shard-00001-of-00002 both stored example.*{first[0]}"):
        verify_collect(dup)

    other = tmp_path / "other"
    _collect_shard(other, Shard(0, 2))
    _collect_shard(other, Shard(1, 2))
    plan = other / collect_plan_name("train", 1, 2)
    data = json.loads(plan.read_text())
    data["identity"]["max_new_tokens"] = 8
    plan.write_text(json.dumps(data))
    with pytest.raises(MergeError, match="shard-00001-of-00002 ran something else than shard-00000-of-00002"):
        verify_collect(other)
    plain = tmp_path / "plain"  # one process, no plans: nothing to verify against
    writer = ChunkWriter(plain, "train", 0, HEADER)
    writer.add(_example(KEYS[0]))
    writer.flush()
    res = CliRunner().invoke(app, ["merge", str(plain)])
    assert res.exit_code == 1 and "no shard plans" in res.output and "training reads it as it is" in res.output
