"""The demo's measurement: each clip encoded once (untimed) before its questions, for both
runs alike; the runs of a case in alternating order; caches switched off afterwards; the
drafter it picks from the shipped heads."""

from __future__ import annotations

import json

import torch

from evspec import demo
from evspec.models.request import Request


def _models():
    from evspec.models.eventgpt import EventGPT
    from evspec.models.target import VideoLlavaTarget

    target = VideoLlavaTarget.from_preset("tiny-random", seed=0)
    return target, EventGPT.from_preset("tiny-random", seed=1)


def _cases(target, eventgpt):
    from evspec.loading import random_images

    size, n = target.config.vision_config.image_size, eventgpt.config.n_event_images
    ev_size = eventgpt.config.image_size
    clips = {c: (random_images(target.num_frames, size, s), random_images(n, ev_size, s + 9))
             for s, c in enumerate(("a", "b"))}
    qs = [("a", "What is moving?"), ("a", "Describe the scene."), ("b", "What is moving?")]
    return [demo.DemoCase(Request(q, *clips[c], clip_id=c), None) for c, q in qs]


def test_timed_pairs_see_warm_clip_caches_on_both_sides():
    torch.set_num_threads(1)
    target, eventgpt = _models()
    cases = _cases(target, eventgpt)
    rows = demo.run_demo(target, eventgpt, cases, drafter="eventgpt", gamma=2, max_new_tokens=4)
    assert all(r.identical for r in rows)
    for r in rows:  # every timed run found its clip encoded: no vision tower in the timings
        assert r.baseline.stats.target_vision_ms == 0.0
        assert r.speculative.stats.target_vision_ms == 0.0
        assert r.speculative.stats.draft_vision_ms == 0.0
    assert target.prefix_cache is None and eventgpt.prefix_cache is None  # switched off again
    cold = demo.run_demo(target, eventgpt, cases, drafter="eventgpt", gamma=2, max_new_tokens=4,
                         cache_clips=False)
    assert all(r.baseline.stats.target_vision_ms > 0 for r in cold)
    assert [r.baseline.tokens for r in cold] == [r.baseline.tokens for r in rows]


def test_default_drafter_follows_the_shipped_heads(tmp_path):
    world = tmp_path / "world"
    for part in ("target", "drafter", "heads/event-head"):
        (world / part).mkdir(parents=True)
        (world / part / "config.json").write_text(json.dumps({}))
    (world / "manifest.json").write_text("{}")
    assert demo.default_drafter(tmp_path) == "event-head"
    (world / "heads" / "target-head").mkdir()
    (world / "heads" / "target-head" / "config.json").write_text("{}")
    assert demo.default_drafter(tmp_path) == "event-router"
    (world / "heads" / "event-head" / "config.json").unlink()
    assert demo.default_drafter(tmp_path) == "eventgpt"
