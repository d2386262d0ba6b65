"""Benchmarks render a manifest's events the way its models were trained: the synthetic
world on sensor-sized canvases without the ~50 ms window warning, other data on EventGPT's
data-sized canvas (with the warning)."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest

from evspec.bench.datasets import manifest_items, render_options
from evspec.data.loading import load_clip_inputs
from evspec.data.manifest import load_manifest

WORLD = Path(__file__).resolve().parents[2] / "src" / "evspec" / "assets" / "world"


def test_render_options_from_meta() -> None:
    assert render_options({"source": "evspec synthetic world"}) == ("sensor", False)
    assert render_options({}) == ("chunk", True)
    assert render_options({"event_canvas": "data"}) == ("data", True)
    assert render_options({"event_canvas": "sensor"}) == ("sensor", True)
    with pytest.raises(ValueError, match="event_canvas"):
        render_options({"event_canvas": "screen"})


@pytest.mark.skipif(not (WORLD / "manifest.json").is_file(), reason="world assets not shipped")
def test_world_manifest_renders_on_the_sensor_canvas(tmp_path: Path) -> None:
    manifest = load_manifest(WORLD / "manifest.json")
    items = manifest_items(WORLD / "manifest.json", split=None)
    # a clip whose events do not reach the sensor's far edges: the two canvases differ
    for entry in manifest.clips:
        sensor = load_clip_inputs(entry, manifest.root, canvas="sensor", warn_window=False)[1]
        data = load_clip_inputs(entry, manifest.root, canvas="chunk", warn_window=False)[1]
        if len(sensor) != len(data) or any(
            a.shape != b.shape or not np.array_equal(a, b) for a, b in zip(sensor, data)
        ):
            break
    else:
        pytest.fail("no shipped clip tells the canvases apart")
    item = next(it for it in items if it.clip_id == entry.id)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no window warning for the world's 1 s clips
        req = item.load()
    np.testing.assert_array_equal(req.event_images, sensor)
    # the same files under a manifest that is not the world's: the release's per-image canvas
    other = tmp_path / "other"
    shutil.copytree(WORLD / "clips", other / "clips")
    raw = json.loads((WORLD / "manifest.json").read_text())
    raw["meta"] = {"source": "somewhere else"}
    (other / "manifest.json").write_text(json.dumps(raw))
    other_item = next(it for it in manifest_items(other / "manifest.json", split=None) if it.clip_id == entry.id)
    with pytest.warns(Warning, match="window"):
        req = other_item.load()
    assert len(req.event_images) == len(data)
    for got, want in zip(req.event_images, data):  # the sizes may differ image to image
        np.testing.assert_array_equal(got, want)


@pytest.mark.skipif(not (WORLD / "manifest.json").is_file(), reason="world assets not shipped")
def test_generate_inputs_render_world_clips_like_the_bench() -> None:
    """`evspec generate` with a world drafter renders a clip's events exactly as the bench and
    the demo do (sensor canvas, no window warning); other drafters keep EventGPT's rendering."""
    from types import SimpleNamespace

    from evspec.loading import ClipSizes, is_world_model, load_inputs

    manifest = load_manifest(WORLD / "manifest.json")
    for entry in manifest.clips:  # a clip where the two canvases differ
        sensor = load_clip_inputs(entry, manifest.root, canvas="sensor", warn_window=False)[1]
        if not np.array_equal(sensor, load_clip_inputs(entry, manifest.root, canvas="data", warn_window=False)[1]):
            break
    events = WORLD / "clips" / entry.id / "events.npz"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the ~50 ms window warning would fail here
        got = load_inputs(None, str(events), ClipSizes(world=True)).event_images
    np.testing.assert_array_equal(got, sensor)
    with pytest.warns(Warning, match="window"):
        plain = load_inputs(None, str(events), ClipSizes()).event_images
    assert not np.array_equal(plain, sensor)

    # the world is declared by the checkpoint's config, whatever its tower is called
    assert is_world_model(SimpleNamespace(config=SimpleNamespace(world=True)))
    assert not is_world_model(SimpleNamespace(config=SimpleNamespace(
        world=False, mm_visual_tower="evspec/world-clip")))
    assert not is_world_model(SimpleNamespace(config=SimpleNamespace()))


@pytest.mark.skipif(not (WORLD / "manifest.json").is_file(), reason="world assets not shipped")
def test_collect_and_eval_requests_take_the_manifests_canvas(tmp_path: Path) -> None:
    """`evspec collect` / `eval` default to canvas auto: the world's sensor canvas for the
    world, the release's per-chunk canvas for any other manifest (e.g. DSEC clips)."""
    from evspec.training.heads.requests import manifest_requests

    manifest = load_manifest(WORLD / "manifest.json")
    entry = manifest.clips[0]
    kw = dict(splits=(entry.split,), num_frames=8, n_event_images=5, limit=1)
    world = manifest_requests(WORLD / "manifest.json", **kw)[0].load()
    sensor = load_clip_inputs(entry, manifest.root, canvas="sensor", warn_window=False)[1]
    np.testing.assert_array_equal(world.event_images, sensor)
    other = tmp_path / "other"
    shutil.copytree(WORLD / "clips", other / "clips")
    raw = json.loads((WORLD / "manifest.json").read_text())
    raw["meta"] = {"source": "dsec"}
    (other / "manifest.json").write_text(json.dumps(raw))
    got = manifest_requests(other / "manifest.json", **kw)[0].load().event_images
    chunk = load_clip_inputs(entry, manifest.root, canvas="chunk", warn_window=False)[1]
    assert [im.shape for im in chunk] != [im.shape for im in sensor]  # the two differ here
    assert len(got) == len(chunk)
    for a, b in zip(got, chunk):
        np.testing.assert_array_equal(a, b)
