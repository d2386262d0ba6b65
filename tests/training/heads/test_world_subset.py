"""A world subset holds exactly the full world's clips and splits (the held-out test clips
the world models never saw stay held out)."""

from __future__ import annotations

import json

import pytest

from evspec.training.heads.ship import pack_heads
from evspec.training.heads.world_subset import write_world_subset


def test_subset_matches_the_full_world(micro_world, tmp_path):
    # micro_world: 8 clips, seed 1, 32 px (conftest)
    report = write_world_subset(tmp_path / "sub", clips=8, seed=1, resolution=32,
                                per_split={"train": 2, "val": 1, "test": 1})
    assert report.counts == {"train": 2, "val": 1, "test": 1}
    full = {c["id"]: c for c in json.loads(micro_world.read_text())["clips"]}
    for clip in json.loads(report.manifest.read_text())["clips"]:
        ref = full[clip["id"]]
        assert clip["split"] == ref["split"] and clip["questions"] == ref["questions"]
        ev = (tmp_path / "sub" / clip["events"]).read_bytes()
        assert ev == (micro_world.parent / ref["events"]).read_bytes()
    with pytest.raises(ValueError, match="per_split"):
        write_world_subset(tmp_path / "bad", clips=8, seed=1, per_split={"holdout": 1})


def test_pack_heads_ships_the_best_by_validation(trained, tmp_path):
    chosen = pack_heads([trained[k] for k in ("bottleneck", "attention", "event-head", "lora")], tmp_path / "heads")
    assert set(chosen) == {"eventgpt-adapter", "event-head", "eventgpt-lora"}
    best_adapter = max(("bottleneck", "attention"),
                       key=lambda k: json.loads((trained[k] / "best" / "config.json").read_text())["best"]["top1"])
    assert chosen["eventgpt-adapter"]["kind"] == best_adapter
    assert (tmp_path / "heads" / "event-head" / "module.safetensors").is_file()
    assert "validation top-1" in (tmp_path / "heads" / "README.md").read_text()
