"""The event-head's per-request event side: the memory's cross-attention keys/values are
computed once per request (never per drafted token), kept per clip while a prefix cache is
on, prefetched before the target's prefill, and drafting from them proposes bitwise what
the head computing them itself proposes."""

from __future__ import annotations

import pytest
import torch

from evspec.modules.head import DraftHead
from evspec.decoding.drafters import make_drafter
from evspec.decoding.engine import generate


class Counter:
    """Wraps a bound method and counts its calls."""

    def __init__(self, fn) -> None:
        self.fn, self.calls = fn, 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.fn(*args, **kwargs)


def _count(monkeypatch, drafter) -> tuple[Counter, Counter]:
    """Count the head's ``memory_kv`` calls and EventGPT's vision-tower calls."""
    kv = Counter(drafter.head.memory_kv)
    monkeypatch.setattr(drafter.head, "memory_kv", kv)
    model = drafter.draft_model.model
    tower = Counter(model.encode_events)
    monkeypatch.setattr(model, "encode_events", tower)
    return kv, tower


@pytest.mark.parametrize("static", [False, True])
def test_memory_keys_values_once_per_request(
    monkeypatch, ckpts, requests, target, eventgpt, static
):
    drafter = make_drafter("event-head", target=target, draft_model=eventgpt,
                           head_path=ckpts["event-head"], static=static)
    kv, tower = _count(monkeypatch, drafter)
    base = generate(target, requests[0], None, max_new_tokens=10)
    spec = generate(target, requests[0], drafter, gamma=2, max_new_tokens=10)
    assert spec.tokens == base.tokens
    assert len(spec.stats.rounds) >= 3  # several rounds, many drafted tokens ...
    assert kv.calls == 1 and tower.calls == 1  # ... one memory computation
    generate(target, requests[1], drafter, gamma=2, max_new_tokens=10)
    assert kv.calls == 2 and tower.calls == 2  # no prefix cache: once per request


def test_memory_keys_values_once_per_clip_with_a_prefix_cache(
    monkeypatch, ckpts, requests, world_items, target, eventgpt
):
    drafter = make_drafter("event-head", target=target, draft_model=eventgpt,
                           head_path=ckpts["event-head"])
    kv, tower = _count(monkeypatch, drafter)
    same_clip = world_items[1].load()
    assert same_clip.clip_id == requests[0].clip_id
    target.enable_prefix_cache()  # the target's cache alone turns the per-clip reuse on
    try:
        answers = [generate(target, r, drafter, gamma=3, max_new_tokens=10).tokens
                   for r in (requests[0], same_clip, requests[0])]
        assert kv.calls == 1 and tower.calls == 1
        generate(target, requests[1], drafter, gamma=3, max_new_tokens=10)  # another clip
        assert kv.calls == 2 and tower.calls == 2
    finally:
        target.disable_prefix_cache()
    assert answers[0] == answers[2] == generate(target, requests[0], None, max_new_tokens=10).tokens
    assert answers[1] == generate(target, same_clip, None, max_new_tokens=10).tokens


def test_prefetched_memory_is_used_by_begin(monkeypatch, ckpts, requests, target, eventgpt):
    drafter = make_drafter("event-head", target=target, draft_model=eventgpt,
                           head_path=ckpts["event-head"])
    kv, _ = _count(monkeypatch, drafter)
    drafter.prefetch(requests[0])
    assert kv.calls == 1
    state = target.prefill(requests[0], return_hidden=True)
    drafter.begin(requests[0], target, state, int(torch.argmax(state.last_logits)))
    assert kv.calls == 1 and drafter.timings.get("vision_ms", 0) > 0  # its timings reported
    drafter.end()
    drafter.prefetch(requests[0])  # a prefetch for another request is not taken
    state = target.prefill(requests[1], return_hidden=True)
    drafter.begin(requests[1], target, state, int(torch.argmax(state.last_logits)))
    assert kv.calls == 3
    drafter.overlap_events = False
    drafter.prefetch(requests[0])
    assert kv.calls == 3


@pytest.mark.parametrize("static", [False, True])
def test_proposals_bitwise_those_of_a_head_computing_its_memory(
    ckpts, requests, target, eventgpt, static
):
    """The drafter (precomputed keys/values, static runner or eager cache) against the
    head's own reference path: a cache built from the raw memory, extended step by step."""
    from evspec.modules.memory import event_memory

    drafter = make_drafter("event-head", target=target, draft_model=eventgpt,
                           head_path=ckpts["event-head"], static=static)
    head: DraftHead = drafter.head
    req = requests[0]
    state = target.prefill(req, return_hidden=True)
    first = int(torch.argmax(state.last_logits))
    drafter.begin(req, target, state, first)
    got = drafter.propose(5, 0.0, None).tokens.tolist()

    memory, _ = event_memory(eventgpt, req, head.config.memory_source)
    cache = head.new_cache(memory)
    f = head.extend(cache, state.last_hidden[None], drafter._emb([first]))[-1]
    want, feats = [], []
    for _ in range(5):
        tok = int(torch.argmax(drafter._logits(f)))
        want.append(tok)
        f = head.extend(cache, f[None], drafter._emb([tok]))[0]
        feats.append(f)
    assert got == want
    if not static:  # the eager drafter's cache holds bitwise the reference's rows
        n = cache.length - 1
        assert torch.equal(drafter._cache.keys[0][:, :, :n], cache.keys[0][:, :, :n])
    drafter.end()


def test_untimed_memory_of_the_side_stream_is_the_timed_one(ckpts, requests, target, eventgpt):
    drafter = make_drafter("event-head", target=target, draft_model=eventgpt,
                           head_path=ckpts["event-head"])
    timed_kv, t = drafter._compute_memory_kv(requests[0])
    side_kv, t_side = drafter._compute_memory_kv(requests[0], untimed=True)
    assert t.get("vision_ms", 0) > 0 and t_side == {}
    assert all(torch.equal(a, b) for pa, pb in zip(timed_kv, side_kv) for a, b in zip(pa, pb))
