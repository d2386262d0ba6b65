"""The draft head's fixed-shape drafting (``StaticHeadRunner``, CUDA graphs on a GPU; here
the same code eagerly on the CPU) drafts what the eager head drafts, stays lossless, and
the event memory is reused per clip while the draft model's prefix cache is on."""

from __future__ import annotations

import pytest
import torch

from evspec.modules.head import DraftHead, HeadConfig
from evspec.modules.head_static import StaticHeadRunner
from evspec.decoding.drafters import DrafterError, make_drafter
from evspec.decoding.engine import generate


@pytest.mark.parametrize("memory", ["none", "events"])
def test_runner_matches_the_eager_head(memory: str) -> None:
    torch.manual_seed(0)
    width, vocab = 32, 50
    cfg = HeadConfig(hidden_size=width, num_layers=2, num_heads=4, memory_source=memory,
                     memory_size=24 if memory != "none" else 0, max_positions=40)
    head = DraftHead(cfg).eval()
    embed, lm_head = torch.nn.Embedding(vocab, width), torch.nn.Linear(width, vocab, bias=False)
    mem = torch.randn(7, 24) if memory != "none" else None
    runner = StaticHeadRunner(head, embed, lm_head, max_feed=5, max_chain=4)
    for request in range(2):  # a second request reuses the buffers
        runner.begin(mem)
        cache = head.new_cache(mem, capacity=4)  # grows on demand
        for n_feed, k in ((1, 4), (3, 2), (5, 4), (2, 1)):
            hidden, tokens = torch.randn(n_feed, width), torch.randint(0, vocab, (n_feed,)).tolist()
            want_f = head.extend(cache, hidden, embed(torch.tensor(tokens)))[-1]
            got_f = runner.feed(hidden, tokens)
            torch.testing.assert_close(got_f, want_f, rtol=1e-5, atol=1e-5)
            committed, want = cache.length, []
            f = want_f
            for i in range(k):  # the eager drafter's greedy chain
                tok = int(torch.argmax(lm_head(f)))
                want.append(tok)
                if i < k - 1:
                    f = head.extend(cache, f[None], embed(torch.tensor([tok])))[0]
            cache.truncate(committed)
            assert runner.greedy_chain(k).tolist() == want, (request, n_feed, k)
            assert runner.length == committed
    assert runner.stats["eager_steps"] > 0 and runner.stats["graphs"] == 0  # no graphs on the CPU
    with pytest.raises(ValueError, match="max_feed"):
        runner.feed(torch.randn(6, width), list(range(6)))
    with pytest.raises(ValueError, match="max_chain"):
        runner.greedy_chain(5)
    runner.begin(mem)
    for _ in range(8):  # fill the 40 positions
        runner.feed(torch.randn(5, width), [1] * 5)
    assert runner.room == 0
    with pytest.raises(ValueError, match="cache full"):
        runner.feed(torch.randn(1, width), [1])


def test_runner_refuses_a_prompt_state_memory() -> None:
    cfg = HeadConfig(hidden_size=16, num_heads=2, memory_source="prefill", memory_size=8)
    with pytest.raises(ValueError, match="prefill"):
        StaticHeadRunner(DraftHead(cfg), torch.nn.Embedding(9, 16), torch.nn.Linear(16, 9))


@pytest.mark.parametrize("kind", ["target-head", "event-head"])
def test_static_head_drafter_drafts_like_the_eager_one(kind, ckpts, requests, target, eventgpt):
    eager = make_drafter(kind, target=target, draft_model=eventgpt, head_path=ckpts[kind], static=False)
    static = make_drafter(kind, target=target, draft_model=eventgpt, head_path=ckpts[kind], static=True)
    accepted = 0
    for req in requests:
        base = generate(target, req, None, max_new_tokens=12)
        for gamma in (1, 3, 5):
            a = generate(target, req, eager, gamma=gamma, max_new_tokens=12)
            b = generate(target, req, static, gamma=gamma, max_new_tokens=12)
            assert a.tokens == b.tokens == base.tokens, (kind, gamma)
            rounds = lambda r: [(x.drafted, x.accepted) for x in r.stats.rounds]  # noqa: E731
            assert rounds(b) == rounds(a), (kind, gamma)
            accepted += b.stats.accepted
        # sampling: the same seed gives the same draws (same draft distributions)
        a = generate(target, req, eager, gamma=3, max_new_tokens=12, temperature=0.8, seed=5)
        b = generate(target, req, static, gamma=3, max_new_tokens=12, temperature=0.8, seed=5)
        assert a.tokens == b.tokens
    assert accepted > 0
    assert static._use_runner and static._runner.stats["eager_steps"] > 0
    assert not eager._use_runner


def test_static_is_the_default_with_cuda_graphs(ckpts, requests, target, eventgpt):
    from types import SimpleNamespace

    head = make_drafter("target-head", target=target, head_path=ckpts["target-head"])
    req = requests[0]
    base = generate(target, req, None, max_new_tokens=10)
    generate(target, req, head, gamma=3, max_new_tokens=10)
    assert not head._use_runner  # the default dynamic path: eager head
    target.enable_fast()  # on the CPU: no graphs, so the eager head (cheaper there)
    try:
        out = generate(target, req, head, gamma=3, max_new_tokens=10)
        assert not head._use_runner and out.tokens == base.tokens
    finally:
        target.disable_fast()
    graphs = SimpleNamespace(fast=SimpleNamespace(config=SimpleNamespace(cuda_graphs=True)))
    head.target = graphs
    assert head._wants_static()  # a target replaying CUDA graphs: the static runner
    head.target = target
    head.static = True  # forced, as the tests above do
    assert head._wants_static()
    with pytest.raises(DrafterError, match="static"):
        from evspec.decoding.drafters.head import HeadDrafter

        HeadDrafter(DraftHead(HeadConfig(hidden_size=target.lm_head.weight.shape[1], num_heads=2,
                                         memory_source="prefill", memory_size=8)),
                    target, name="x", draft_model=eventgpt, static=True)


def test_event_memory_is_reused_per_clip_with_the_prefix_cache(ckpts, requests, world_items, target, eventgpt):
    drafter = make_drafter("event-head", target=target, draft_model=eventgpt, head_path=ckpts["event-head"])
    first, same_clip, other_clip = requests[0], world_items[1].load(), requests[1]
    assert first.clip_id == same_clip.clip_id and first.question != same_clip.question

    def memory_ms(req) -> float:
        state = target.prefill(req, return_hidden=True)
        drafter.begin(req, target, state, int(torch.argmax(state.last_logits)))
        drafter.end()
        return drafter.timings.get("vision_ms", 0.0)

    assert memory_ms(first) > 0 and memory_ms(same_clip) > 0  # no prefix cache: computed each time
    eventgpt.enable_prefix_cache()
    try:
        assert memory_ms(first) > 0
        assert memory_ms(same_clip) == 0.0  # reused
        assert memory_ms(other_clip) > 0  # another clip
        base = generate(target, same_clip, None, max_new_tokens=10)
        assert generate(target, same_clip, drafter, gamma=3, max_new_tokens=10).tokens == base.tokens
    finally:
        eventgpt.disable_prefix_cache()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
def test_cuda_graph_runner_matches_the_eager_runner() -> None:
    torch.manual_seed(0)
    width, vocab, dev = 64, 80, torch.device("cuda")
    cfg = HeadConfig(hidden_size=width, num_heads=4, memory_source="events", memory_size=32, max_positions=64)
    head = DraftHead(cfg).to(dev).eval()
    embed, lm_head = torch.nn.Embedding(vocab, width).to(dev), torch.nn.Linear(width, vocab, bias=False).to(dev)
    graphed = StaticHeadRunner(head, embed, lm_head, max_feed=5, max_chain=4)
    eager = StaticHeadRunner(head, embed, lm_head, max_feed=5, max_chain=4, cuda_graphs=False)
    mem = torch.randn(9, 32, device=dev)
    with pytest.raises(ValueError, match="begin"):
        graphed.prepare(5, 4)  # the memory's buffers do not exist yet
    for r in (graphed, eager):
        r.begin(mem)
    assert graphed.prepare(5, 4) == 9  # every feed and chain shape, before the first feed
    for n_feed, k in ((1, 4), (4, 3), (5, 4), (2, 2), (3, 1)):
        hidden, tokens = torch.randn(n_feed, width, device=dev), torch.randint(0, vocab, (n_feed,)).tolist()
        torch.testing.assert_close(graphed.feed(hidden, tokens), eager.feed(hidden, tokens))
        assert graphed.greedy_chain(k).tolist() == eager.greedy_chain(k).tolist()
    assert graphed.stats["graphs"] == 9 and graphed.stats["replays"] >= 10


@pytest.mark.parametrize("device", [
    "cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU"))])
def test_static_heads_on_the_fast_engine_are_lossless(device: str) -> None:
    """The fast target (CUDA graphs on a GPU) with static heads: the answer is target-only's."""
    from evspec.models.eventgpt import EventGPT
    from evspec.models.request import Request
    from evspec.models.target import VideoLlavaTarget
    from evspec.loading import random_images

    dtype = torch.float32
    tgt = VideoLlavaTarget.from_preset("tiny-random", seed=0, device=device, dtype=dtype)
    ev = EventGPT.from_preset("tiny-random", seed=1, device=device, dtype=dtype)
    req = Request("What is moving?", random_images(tgt.num_frames, tgt.config.vision_config.image_size, 0),
                  random_images(ev.n_event_images, ev.config.image_size, 1), clip_id="c0")
    base = generate(tgt, req, None, max_new_tokens=12, stop_at_eos=False)
    tgt.enable_fast()
    try:
        for name in ("event-head", "target-head"):
            head = make_drafter(name, target=tgt, draft_model=ev, head_path="untrained", static=True)
            for gamma in (1, 4):
                out = generate(tgt, req, head, gamma=gamma, max_new_tokens=12, stop_at_eos=False)
                assert out.tokens == base.tokens, (name, gamma)
            assert head._use_runner and head._runner.cuda_graphs == (device == "cuda")
            if device == "cuda":
                head.prepare_steps(4)  # every feed (1..5 pairs) and chain (1..4 drafts) is a graph now
                want = {("feed", n) for n in range(1, 6)} | {("chain", k) for k in range(1, 5)}
                assert want <= set(head._runner._graphs) and head._runner.stats["replays"] > 0
    finally:
        tgt.disable_fast()
