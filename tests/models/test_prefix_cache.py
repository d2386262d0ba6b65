"""The per-clip prefix cache: identical logits/tokens with and without it for several
questions on one clip (dynamic and fast paths, Video-LLaVA and EventGPT), the decoder
and vision work skipped on a hit, correct invalidation for another clip or other pixels
under the same clip id."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from evspec.decoding.drafters import ModelDrafter
from evspec.decoding.engine import generate
from evspec.models.eventgpt import EventGPT
from evspec.models.fast.prefix_cache import PrefixCache, media_fingerprint
from evspec.models.request import Request
from evspec.models.target import VideoLlavaTarget

torch.set_num_threads(1)
QUESTIONS = ("What is moving?", "What colour is the square?", "How many objects are there?")


def _frames(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 40, 48, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def target() -> VideoLlavaTarget:
    return VideoLlavaTarget.from_preset("tiny-random", seed=0)


@pytest.fixture(scope="module")
def eventgpt() -> EventGPT:
    return EventGPT.from_preset("tiny-random", seed=0)


class _Counter:
    """Counts positions through the first decoder layer and calls of a vision module."""

    def __init__(self, decoder: torch.nn.Module, vision: torch.nn.Module) -> None:
        self.positions = 0
        self.vision_calls = 0
        self._hooks = [
            decoder.layers[0].input_layernorm.register_forward_hook(self._count),
            vision.register_forward_hook(self._vision),
        ]

    def _count(self, module, args, out) -> None:
        self.positions += int(args[0].shape[-2])

    def _vision(self, module, args, out) -> None:
        self.vision_calls += 1

    def take(self) -> tuple[int, int]:
        out = (self.positions, self.vision_calls)
        self.positions = self.vision_calls = 0
        return out

    def close(self) -> None:
        for h in self._hooks:
            h.remove()


def _setup(model, fast: bool, max_clips: int = 1) -> None:
    model.disable_fast()
    model.disable_prefix_cache()
    if fast:
        model.enable_fast()
    model.enable_prefix_cache(max_clips=max_clips)


def _reset(model) -> None:
    model.disable_fast()
    model.disable_prefix_cache()


@pytest.mark.parametrize("fast", [False, True], ids=["dynamic", "fast"])
def test_target_same_clip_reuses_prefix(target: VideoLlavaTarget, fast: bool) -> None:
    video = _frames(target.num_frames, 1)
    _reset(target)
    reference = [target.prefill(Request(q, video=video)).last_logits for q in QUESTIONS]
    expected = generate(target, Request(QUESTIONS[0], video=video), None, max_new_tokens=16).tokens
    _setup(target, fast)
    counter = _Counter(target.decoder, target._base.video_tower)

    def ask(q):  # keep no state alive: the fast path has two static caches
        s = target.prefill(Request(q, video=video, clip_id="clip-1"))
        return {"n": int(s.prompt_ids.numel()), "split": s.extra["prefix_len"],
                "timings": dict(s.timings), "logits": s.last_logits,
                "features": s.extra["video_features"]}

    try:
        first = [ask(q) for q in QUESTIONS]
        positions, vision_calls = counter.take()
        again = [ask(q) for q in QUESTIONS]
        positions_again, vision_again = counter.take()
    finally:
        counter.close()
    split = first[0]["split"]
    assert vision_calls == 1 and vision_again == 0  # the frames were encoded once
    assert positions == first[0]["n"] + sum(r["n"] - split for r in first[1:])
    assert positions_again == sum(r["n"] - split for r in again)  # suffixes only
    assert [r["timings"]["prefix_hit"] for r in first] == [False, True, True]
    assert "vision_ms" in first[0]["timings"]
    assert all("vision_ms" not in r["timings"] and r["timings"]["prefill_ms"] > 0 for r in again)
    for r, ref in zip(again, reference):
        torch.testing.assert_close(r["logits"], ref, atol=1e-4, rtol=0)
    # a hit computes exactly what the miss computed (the same two passes)
    assert torch.equal(again[0]["logits"], first[0]["logits"])
    assert again[0]["features"].shape == (target.video_tokens, target.config.text_config.hidden_size)
    got = generate(target, Request(QUESTIONS[0], video=video, clip_id="clip-1"), None, max_new_tokens=16)
    assert got.tokens == expected
    assert target.prefix_cache.stats["misses"] == 1
    _reset(target)


@pytest.mark.parametrize("fast", [False, True], ids=["dynamic", "fast"])
def test_other_clip_and_other_pixels_invalidate(target: VideoLlavaTarget, fast: bool) -> None:
    v1, v2 = _frames(target.num_frames, 2), _frames(target.num_frames, 3)
    _reset(target)
    ref1 = target.prefill(Request(QUESTIONS[0], video=v1)).last_logits
    ref2 = target.prefill(Request(QUESTIONS[0], video=v2)).last_logits
    _setup(target, fast, max_clips=1)

    def ask(video, clip):
        return target.prefill(Request(QUESTIONS[0], video=video, clip_id=clip))

    a = ask(v1, "a")
    b = ask(v2, "b")  # another clip: a miss, evicts "a" (max_clips = 1)
    assert not b.timings["prefix_hit"]
    torch.testing.assert_close(b.last_logits, ref2, atol=1e-4, rtol=0)
    del a, b
    c = ask(v1, "a")
    assert not c.timings["prefix_hit"]  # evicted
    torch.testing.assert_close(c.last_logits, ref1, atol=1e-4, rtol=0)
    del c
    d = ask(v2, "a")  # the same clip id with other pixels: never a stale answer
    assert not d.timings["prefix_hit"]
    torch.testing.assert_close(d.last_logits, ref2, atol=1e-4, rtol=0)
    del d
    e = target.prefill(Request(QUESTIONS[0], video=v1))  # no clip id: not cached
    assert "prefix_hit" not in e.timings
    _setup(target, fast, max_clips=2)
    ask(v1, "a"), ask(v2, "b")
    assert ask(v1, "a").timings["prefix_hit"] and ask(v2, "b").timings["prefix_hit"]
    _reset(target)


@pytest.mark.parametrize("fast", [False, True], ids=["dynamic", "fast"])
def test_eventgpt_prefix_cache(eventgpt: EventGPT, fast: bool) -> None:
    images = _frames(3, 4)
    _reset(eventgpt)
    reference = [eventgpt.prefill(Request(q, event_images=images)) for q in QUESTIONS]
    _setup(eventgpt, fast)
    counter = _Counter(eventgpt.decoder, eventgpt.model.model.visual_tower)
    try:
        first = []
        for q in QUESTIONS:
            first.append(eventgpt.prefill(Request(q, event_images=images, clip_id="ev")))
            eventgpt.release(first[-1])  # keep it for inspection, free its static cache
        split = first[0].extra["prefix_len"]
        positions, vision_calls = counter.take()
    finally:
        counter.close()
    assert vision_calls == 1
    lengths = [int(s.prompt_ids.numel()) for s in first]
    assert positions == lengths[0] + lengths[1] - split + lengths[2] - split
    assert [s.timings["prefix_hit"] for s in first] == [False, True, True]
    for s, ref in zip(first, reference):
        torch.testing.assert_close(s.last_logits, ref.last_logits, atol=1e-4, rtol=0)
        assert s.extra["event_span"] == ref.extra["event_span"]
        torch.testing.assert_close(s.extra["event_embeds"], ref.extra["event_embeds"])
        assert torch.equal(s.prompt_ids, ref.prompt_ids)
    assert split == reference[0].extra["event_span"][1]
    _reset(eventgpt)


def test_engine_with_eventgpt_drafter_and_both_caches(target: VideoLlavaTarget, eventgpt: EventGPT) -> None:
    """Target and drafter both cache their prefixes; ten questions' worth of answers are
    identical to the uncached run."""
    video, images = _frames(target.num_frames, 5), _frames(3, 6)
    _reset(target), _reset(eventgpt)

    def answers(clip):
        out = []
        for q in QUESTIONS:
            req = Request(q, video=video, event_images=images, clip_id=clip)
            out.append(generate(target, req, ModelDrafter(eventgpt, name="eventgpt"),
                                gamma=3, max_new_tokens=12).tokens)
        return out

    expected = answers(None)
    for fast in (False, True):
        _setup(target, fast)
        _setup(eventgpt, fast)
        assert answers("clip") == expected
        assert target.prefix_cache.stats["hits"] == 2 and eventgpt.prefix_cache.stats["hits"] == 2
    _reset(target), _reset(eventgpt)


def test_fingerprint_and_cache_limits() -> None:
    a = _frames(2, 7)
    b = a.copy()
    assert media_fingerprint(a) == media_fingerprint(b)
    b[-1, -1, -1, -1] ^= 1  # the last element is always hashed
    assert media_fingerprint(a) != media_fingerprint(b)
    assert media_fingerprint(a[:1]) != media_fingerprint(a) and media_fingerprint(None) == ""
    with pytest.raises(ValueError, match="at least 1"):
        PrefixCache(0)
