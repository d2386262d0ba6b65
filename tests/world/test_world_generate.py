"""Generation: determinism, splits, the manifest and its sidecars load and agree."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from evspec.data.clipio import load_events
from evspec.data.loading import load_clip_inputs
from evspec.data.manifest import SPLITS, check_manifest, load_manifest
from evspec.data.video import read_video
from evspec.data.world.clip import make_clip
from evspec.data.world.config import WorldConfig
from evspec.data.world.generate import generate_world, load_world_extra
from evspec.data.world.scene import SceneConfig, SceneSpec
from evspec.data.world.splits import assign_splits, split_counts

SMALL = WorldConfig(scene=SceneConfig(resolution=32))


def test_make_clip_is_deterministic_and_seed_dependent() -> None:
    a, b = make_clip(5, 3, SMALL), make_clip(5, 3, SMALL)
    np.testing.assert_array_equal(a.frames, b.frames)
    for f in ("x", "y", "t", "p"):
        np.testing.assert_array_equal(getattr(a.events, f), getattr(b.events, f))
    assert a.questions == b.questions and a.scene == b.scene
    c = make_clip(6, 3, SMALL)
    assert c.scene != a.scene
    assert make_clip(5, 4, SMALL).scene != a.scene


def test_clip_contents() -> None:
    clip = make_clip(0, 0, SMALL)
    assert clip.frames.shape == (20, 32, 32, 3) and clip.frames.dtype == np.uint8
    ev = clip.events
    assert len(ev) > 0 and np.all(np.diff(ev.t) >= 0)
    assert ev.t.min() >= 0 and ev.t.max() <= 1_000_000
    assert ev.x.max() < 32 and ev.y.max() < 32
    assert {q.qtype for q in clip.questions} >= {"describe", "moving", "count", "colour", "shape"}


def test_splits_are_disjoint_deterministic_and_sized() -> None:
    names = assign_splits(200, 3, (0.9, 0.05, 0.05))
    assert names == assign_splits(200, 3, (0.9, 0.05, 0.05))
    assert names != assign_splits(200, 4, (0.9, 0.05, 0.05))
    assert [names.count(s) for s in SPLITS] == [180, 10, 10]
    assert split_counts(20, (0.9, 0.05, 0.05)) == (18, 1, 1)
    assert split_counts(2, (0.9, 0.05, 0.05)) == (2, 0, 0)
    assert sum(split_counts(7, (0.2, 0.4, 0.4))) == 7


def test_tiny_world_manifest_loads_and_checks(tiny_world: Path) -> None:
    manifest = load_manifest(tiny_world / "manifest.json")
    assert len(manifest.clips) == 12
    assert check_manifest(tiny_world / "manifest.json") == []
    ids = [c.id for c in manifest.clips]
    assert len(set(ids)) == 12
    by_split = {s: {c.id for c in manifest.split(s)} for s in SPLITS}
    assert sum(len(v) for v in by_split.values()) == 12
    assert not (by_split["train"] & by_split["val"]) and not (by_split["train"] & by_split["test"])
    assert not (by_split["val"] & by_split["test"])
    assert len(by_split["val"]) == len(by_split["test"]) == 1
    entry = manifest.clips[0]
    video, images = load_clip_inputs(entry, manifest.root, canvas="sensor", warn_window=False)
    assert video is not None and video.shape == (8, 64, 64, 3)
    assert images is not None and images.shape[0] == 5
    stream = load_events(manifest.resolve(entry.events))
    assert stream.sensor_size == (64, 64) and len(stream) > 0
    assert read_video(manifest.resolve(entry.video), 20).shape == (20, 64, 64, 3)
    meta = json.loads((tiny_world / "world.json").read_text())
    assert meta["seed"] == 7 and meta["clips"] == 12
    assert WorldConfig.from_dict(meta["config"]) == WorldConfig()


def test_sidecars_align_with_manifest_questions(tiny_world: Path) -> None:
    manifest = load_manifest(tiny_world / "manifest.json")
    for split in SPLITS:
        extra = load_world_extra(tiny_world, split)
        clips = manifest.split(split)
        assert set(extra) == {c.id for c in clips}
        for c in clips:
            qa = extra[c.id]["qa"]
            assert len(qa) == len(c.questions)
            scene = SceneSpec.from_dict(extra[c.id]["scene"])
            assert len(scene.objects) >= 1
            for q, x in zip(c.questions, qa, strict=True):
                assert q.answer and x["answer_drafter"].startswith("In the scene")
                if q.qtype == "colour":
                    assert x["fields"]["colour"] in q.answer


def test_generation_is_identical_for_any_worker_count(tiny_world: Path, tmp_path: Path) -> None:
    # tiny_world was made with 2 worker processes; redo it in-process.
    out = generate_world(tmp_path / "w", 12, seed=7, workers=1, progress=False, tokenizer=False)
    assert out.clips == 12 and out.questions > 12 * 5
    a = json.loads((tiny_world / "manifest.json").read_text())
    b = json.loads((tmp_path / "w" / "manifest.json").read_text())
    assert a["clips"] == b["clips"]
    for entry in a["clips"][:3]:
        ea = load_events(tiny_world / entry["events"])
        eb = load_events(tmp_path / "w" / entry["events"])
        np.testing.assert_array_equal(ea.t, eb.t)
        np.testing.assert_array_equal(ea.x, eb.x)
        va = read_video(tiny_world / entry["video"], 20)
        np.testing.assert_array_equal(va, read_video(tmp_path / "w" / entry["video"], 20))
    assert (tmp_path / "w" / "world_extra" / "train.json").read_text() == (
        tiny_world / "world_extra" / "train.json"
    ).read_text()


def test_existing_output_is_protected(tmp_path: Path) -> None:
    out = tmp_path / "w"
    generate_world(out, 3, seed=1, progress=False, tokenizer=False)
    with pytest.raises(FileExistsError, match="overwrite"):
        generate_world(out, 3, seed=1, progress=False, tokenizer=False)
    report = generate_world(out, 2, seed=2, progress=False, tokenizer=False, overwrite=True)
    assert report.clips == 2
    assert sorted(p.name for p in (out / "clips").iterdir()) == ["world-000000", "world-000001"]
    foreign = tmp_path / "other"
    foreign.mkdir()
    (foreign / "manifest.json").write_text("{}")
    with pytest.raises(FileExistsError, match="not written by"):
        generate_world(foreign, 2, progress=False, tokenizer=False, overwrite=True)
    with pytest.raises(ValueError, match="at least one clip"):
        generate_world(tmp_path / "x", 0, progress=False)


def test_mp4_output(tmp_path: Path) -> None:
    cfg = WorldConfig(scene=SceneConfig(resolution=32), video_format="mp4")
    generate_world(tmp_path / "w", 1, seed=0, cfg=cfg, progress=False, tokenizer=False)
    entry = load_manifest(tmp_path / "w" / "manifest.json").clips[0]
    assert entry.video.endswith(".mp4")
    frames = read_video(tmp_path / "w" / entry.video, 20)
    np.testing.assert_array_equal(frames, make_clip(0, 0, cfg).frames)  # lossless
