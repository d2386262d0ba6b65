"""Manifests (schema, round trip, one-pass check), the EventGPT importer, clip loading, CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from evspec.data.clipio import save_events
from evspec.data.eventgpt_import import import_eventgpt
from evspec.data.loading import load_clip_inputs
from evspec.data.manifest import (
    QA,
    ClipEntry,
    Manifest,
    ManifestError,
    check_manifest,
    load_manifest,
    save_manifest,
)
from evspec.data.video import write_frame_folder, write_video
from evspec.models.request import Request

pytest.importorskip("av")


def frames(n: int, h: int = 16, w: int = 16) -> np.ndarray:
    f = np.zeros((n, h, w, 3), np.uint8)
    f[..., 0] = np.arange(n, dtype=np.uint8)[:, None, None] * 10
    return f


@pytest.fixture
def dataset(tmp_path, make_stream):
    """A folder with two good clips; returns (manifest path, Manifest)."""
    root = tmp_path / "ds"
    for name, seed in (("a", 0), ("b", 1)):
        save_events(root / "events" / f"{name}.npz", make_stream(500, 32, 24, seed=seed))
        write_video(root / "video" / f"{name}.mp4", frames(12))
    clips = [
        ClipEntry("a", "events/a.npz", "video/a.mp4", None, "train",
                  [QA("What moves?", "A car.", "motion"), QA("Describe the scene.")]),
        ClipEntry("b", "events/b.npz", "video/b.mp4", (0, 40_000), "test", [QA("What colour?")]),
    ]
    path = save_manifest(root / "manifest.json", Manifest(clips, root, {"source": "test"}))
    return path, Manifest(clips, root, {"source": "test"})


def test_round_trip_and_relative_paths(dataset, tmp_path):
    path, m = dataset
    back = load_manifest(path)
    assert back.clips == m.clips and back.meta == m.meta and back.root == path.parent
    assert back.by_id("b").window_us == (0, 40_000)
    assert [c.id for c in back.split("train")] == ["a"]
    raw = json.loads(path.read_text())
    assert raw["format"] == "evspec-manifest" and raw["clips"][0]["events"] == "events/a.npz"
    # saving elsewhere rebases the paths so they still point at the same files
    moved = save_manifest(tmp_path / "elsewhere" / "m.json", back)
    again = load_manifest(moved)
    assert again.clips[0].events == "../ds/events/a.npz"
    target = again.resolve(again.clips[0].events).resolve()
    assert target == (path.parent / "events/a.npz").resolve()
    assert check_manifest(moved) == []


def test_check_clean_manifest(dataset):
    assert check_manifest(dataset[0]) == []


def test_check_reports_every_problem_in_one_pass(dataset, make_stream):
    path, m = dataset
    root = path.parent
    (root / "events" / "broken.npz").write_bytes(b"PK\x03\x04 broken")
    write_video(root / "video" / "short.mp4", frames(4))
    save_events(root / "events" / "few.npz", make_stream(3, 8, 8))
    raw = json.loads(path.read_text())
    raw["clips"] += [
        {"id": "c", "events": "events/missing.npz", "video": "video/short.mp4", "split": "dev",
         "questions": []},
        {"id": "a", "events": "events/broken.npz", "video": None, "questions": [{"question": ""}]},
        {"id": "d", "events": "events/few.npz", "video": "/abs/video.mp4", "window_us": [5, 1],
         "questions": [{"question": "ok?"}]},
        {"events": None, "video": None},
    ]
    path.write_text(json.dumps(raw))
    problems = check_manifest(path)
    text = "\n".join(str(p) for p in problems)
    expected = [
        ("manifest.json", "clips[2] (id=c).split", "'dev'"),
        ("manifest.json", "clips[2] (id=c).events", "file not found"),
        ("short.mp4", "frames", "only 4 frame(s)"),
        ("manifest.json", "clips[2] (id=c).questions", "no questions"),
        ("manifest.json", "clips[3].id", "duplicate id 'a'"),
        ("manifest.json", "clips[3] (id=a).questions[0].question", "non-empty"),
        ("broken.npz", "file", "corrupted or truncated"),
        ("manifest.json", "clips[4] (id=d).video", "absolute path"),
        ("manifest.json", "clips[4] (id=d).window_us", "t1_us=1 must be greater"),
        ("manifest.json", "clips[5].id", "non-empty string"),
        ("manifest.json", "clips[5]", "neither an events file nor a video"),
    ]
    for file, field, reason in expected:
        assert any(p.file.endswith(file) and p.field == field and reason in p.reason
                   for p in problems), f"missing {file} {field} {reason}\n{text}"
    with pytest.raises(ManifestError) as err:
        load_manifest(path)
    assert len(err.value.problems) >= 7 and "more problem" in err.value.reason


def test_check_bad_json_and_missing_file(tmp_path):
    bad = tmp_path / "m.json"
    bad.write_text("{not json")
    [p] = check_manifest(bad)
    assert p.file == str(bad) and "not valid JSON" in p.reason
    [p] = check_manifest(tmp_path / "none.json")
    assert "does not exist" in p.reason
    bad.write_text(json.dumps({"format": "other", "version": 3, "clips": {}}))
    fields = {p.field for p in check_manifest(bad)}
    assert fields == {"format", "version", "clips"}


def test_save_refuses_bad_manifest_and_writes_nothing(tmp_path):
    m = Manifest([ClipEntry("x", None, None, None, "holdout", [])], tmp_path)
    with pytest.raises(ManifestError, match="holdout"):
        save_manifest(tmp_path / "m.json", m)
    assert list(tmp_path.iterdir()) == []


def test_load_clip_inputs_feeds_a_request(dataset):
    path, _ = dataset
    m = load_manifest(path)
    video, images = load_clip_inputs(m.clips[0], m.root)
    assert video.shape == (8, 16, 16, 3) and video.dtype == np.uint8
    assert images.shape[0] == 5 and images.shape[-1] == 3 and images.dtype == np.uint8
    Request("What moves?", video=video, event_images=images, clip_id="a")
    v2, im2 = load_clip_inputs(m.clips[1], m.root, n_event_images=1, num_frames=4, canvas="sensor")
    assert v2.shape == (4, 16, 16, 3) and im2.shape == (1, 24, 32, 3)
    only_video = ClipEntry("v", None, "video/a.mp4", None, "test", [])
    assert load_clip_inputs(only_video, m.root)[1] is None


def test_eventgpt_import(tmp_path, make_stream):
    root = tmp_path / "my_egpt_dsec_seq_1s"
    (root / "event_npy" / "seq").mkdir(parents=True)
    np.save(root / "event_npy" / "seq" / "000000.npy", {
        "x": np.arange(10), "y": np.arange(10), "t": np.arange(10) * 5000, "p": np.arange(10) % 2,
    })
    write_frame_folder(root / "video" / "seq" / "000000", frames(10))
    write_video(root / "mp4" / "seq" / "000000.mp4", frames(10))
    records = [
        {"id": "u1", "split": "my_egpt_dsec_seq_1s", "event_data": "seq/000000.npy",
         "video_data": "seq/000000", "mp4_data": "seq/000000.mp4",
         "event_image": ["seq/000000_0.png"], "event_image_1f": ["seq/000000_0.png"],
         "conversations": [{"from": "human", "value": "<event>\nWhat is this scene about?"},
                           {"from": "gpt", "value": "A road."},
                           {"from": "human", "value": "Any cars?"}, {"from": "gpt", "value": ""}]},
        {"id": "u2", "event_data": "seq/000000.npy", "video_data": "seq/000000",
         "conversations": [{"from": "human", "value": ""}, {"from": "gpt", "value": ""}]},
    ]
    js = root / "EventGPT_Instruction_Subset.json"
    js.write_text(json.dumps(records))
    out = tmp_path / "out" / "manifest.json"
    m = import_eventgpt(js, root, out, split="test")
    a, b = m.clips
    assert a.id == "u1" and a.split == "test"
    assert a.questions == [QA("What is this scene about?", "A road."), QA("Any cars?", None)]
    assert a.video.endswith("mp4/seq/000000.mp4") and a.events.endswith("event_npy/seq/000000.npy")
    assert b.video.endswith("video/seq/000000") and b.questions == []
    loaded = load_manifest(out)
    video, images = load_clip_inputs(loaded.clips[0], loaded.root, canvas="data", warn_window=False)
    assert video.shape == (8, 16, 16, 3) and images.shape == (5, 10, 10, 3)
    # the default is the release's per-chunk canvas: chunk i reaches x = y = 2i + 1
    _, per_chunk = load_clip_inputs(loaded.clips[0], loaded.root, warn_window=False)
    assert [im.shape for im in per_chunk] == [(2 * i + 2, 2 * i + 2, 3) for i in range(5)]
    frames_first = import_eventgpt(js, root, tmp_path / "f.json", video="frames")
    assert frames_first.clips[0].video.endswith("video/seq/000000")


def test_eventgpt_import_reports_all_bad_records(tmp_path):
    js = tmp_path / "e.json"
    js.write_text(json.dumps([
        {"id": "a", "conversations": []},
        "not a record",
        {"id": "b", "event_data": 5, "mp4_data": "x.mp4",
         "conversations": [{"from": "robot", "value": "hi"}]},
    ]))
    with pytest.raises(ManifestError) as err:
        import_eventgpt(js, tmp_path, tmp_path / "m.json")
    fields = [p.field for p in err.value.problems]
    assert fields == ["[0]", "[1]", "[2].event_data", "[2].conversations[0].from"]
    assert not (tmp_path / "m.json").exists()


def test_cli_check_exit_codes(dataset, cli_app):
    app = cli_app
    path, _ = dataset
    runner = CliRunner()
    ok = runner.invoke(app, ["data", "check", str(path)])
    assert ok.exit_code == 0 and "OK" in ok.output
    raw = json.loads(path.read_text())
    raw["clips"][0]["video"] = "video/zzz.mp4"
    raw["clips"][1]["split"] = "nope"
    path.write_text(json.dumps(raw))
    bad = runner.invoke(app, ["data", "check", str(path)])
    assert bad.exit_code == 1
    assert "video/zzz.mp4" in bad.output and "split" in bad.output and "2 problem(s)" in bad.output


def test_cli_render_and_import(dataset, tmp_path, cli_app):
    app = cli_app
    path, _ = dataset
    runner = CliRunner()
    res = runner.invoke(app, ["data", "render", str(path.parent / "events" / "a.npz"),
                              "--out", str(tmp_path / "png"), "--n", "3"])
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in (tmp_path / "png").iterdir()) == ["a_0.png", "a_1.png", "a_2.png"]
    res = runner.invoke(app, ["data", "render", str(tmp_path / "none.npz"), "--out", str(tmp_path)])
    assert res.exit_code == 1 and "does not exist" in res.output


def test_data_layer_does_not_import_torch():
    # every module under evspec.data, the synthetic world included (DESIGN.md: no torch in data)
    code = (
        "import importlib, pkgutil, sys\n"
        "import evspec.data as d\n"
        "mods = [m.name for m in pkgutil.walk_packages(d.__path__, 'evspec.data.')]\n"
        "for m in mods: importlib.import_module(m)\n"
        "assert len(mods) >= 14, mods\n"
        "bad = sorted(k for k in sys.modules if k == 'torch' or k.startswith('torch.'))\n"
        "print('TORCH' if bad else 'CLEAN', len(mods))\n"
    )
    import evspec

    src = str(Path(evspec.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env=env)
    assert out.stdout.startswith("CLEAN"), out.stdout + out.stderr
