"""Greedy decoding with the tokens kept on the device (``StepRunner.chain``,
``decoding.chain``): the same ids as the host loop, the KV left exactly as the host loop
leaves it (EOS inside a chunk, the context limit, any chunk size), and the CUDA-graph
chain (skipped on CPU) equal to the eager one."""

from __future__ import annotations

import pytest
import torch

from evspec.decoding.chain import chainable, chained_greedy
from evspec.decoding.engine import generate
from evspec.decoding.stats import RequestStats
from evspec.models.request import Request
from test_fast_engine import TinyLM  # a sibling test module (tests/models is on sys.path)
from test_fast_graphs import _model, _pair

torch.set_num_threads(1)


def _host_greedy(runner, cache, first: int, steps: int) -> list[int]:
    """One step at a time through ``run``, the argmax read on the host."""
    out, tok = [], first
    for _ in range(steps):
        logits, _ = runner.run(torch.tensor([tok]), cache.length)
        cache.advance(1)
        tok = int(logits[0].argmax())
        out.append(tok)
    return out


@pytest.mark.parametrize("split", [(13,), (5, 8), (1, 1, 11)])
def test_chain_equals_one_step_at_a_time(split: tuple[int, ...]) -> None:
    model = _model(3)
    fast, cache_c, chained = _pair(model, (1, 2, 4), 8)
    _, cache_h, host = _pair(model, (1, 2, 4), 8)
    prompt = torch.arange(3, 12)
    with torch.inference_mode():
        for c in (cache_c, cache_h):
            fast.forward(c, 0, tokens=prompt)
            c.advance(9)
        got: list[int] = []
        for i, n in enumerate(split):
            ids = chained.chain(cache_c.length, n, torch.tensor([7]) if i == 0 else None)
            cache_c.advance(n)
            assert ids.shape == (n,)
            got += ids.tolist()
        expected = _host_greedy(host, cache_h, 7, sum(split))
    assert got == expected
    rows = cache_h.length
    torch.testing.assert_close(cache_c.k[:, :, :rows], cache_h.k[:, :, :rows], atol=1e-6, rtol=0)
    torch.testing.assert_close(cache_c.v[:, :, :rows], cache_h.v[:, :, :rows], atol=1e-6, rtol=0)


def test_chain_continues_only_where_it_stopped() -> None:
    fast, cache, runner = _pair(_model(4), (1, 2), 8)
    with torch.inference_mode():
        fast.forward(cache, 0, tokens=torch.arange(3, 8))
        cache.advance(5)
        with pytest.raises(ValueError, match="no chain stopped at position 5"):
            runner.chain(5, 3)
        runner.chain(5, 3, torch.tensor([4]))
        with pytest.raises(ValueError, match="no chain stopped at position 9"):
            runner.chain(9, 2)
        runner.chain(8, 2)  # continues
        runner.run(torch.tensor([4]), 10)  # a plain step in between breaks the chain
        with pytest.raises(ValueError, match="no chain stopped"):
            runner.chain(11, 1)
        with pytest.raises(ValueError, match="at least one step"):
            runner.chain(11, 0, torch.tensor([4]))


@pytest.mark.parametrize("chunk", [1, 3, 8])
@pytest.mark.parametrize(("seed", "eos_bias", "context", "max_new"),
                         [(22, 0.5, 160, 40), (23, 1.0, 160, 40), (22, 0.0, 160, 30), (23, -100.0, 40, 100),
                          (25, 0.0, 160, 2)])
def test_chained_greedy_leaves_what_the_host_loop_leaves(chunk, seed, eos_bias, context, max_new) -> None:
    """Ids, stop reason and the KV: the token after the answer, scored on the state the
    chain leaves, is the one the host loop generates next (EOS inside a chunk rolled back)."""
    target = TinyLM(seed, eos_bias=eos_bias, context=context)
    target.enable_fast(max_len=context, kv_granularity=16)
    q = Request("abcab xy")
    host = generate(target, q, max_new_tokens=max_new, device_greedy=False, stop_at_eos=True)
    longer = generate(target, q, max_new_tokens=max_new + 1, device_greedy=False, stop_at_eos=False)
    state = target.prefill(q)
    assert chainable(target, state)
    first = int(state.last_logits.argmax())
    assert first != target.eos_token_id  # (generate stops before the chain then)
    stats = RequestStats(drafter="none", gamma=0)
    tokens, stop = chained_greedy(target, state, first, max_new_tokens=max_new, eos=target.eos_token_id,
                                  stats=stats, chunk=chunk)
    assert (tokens, stop) == (host.tokens, host.stats.stop_reason)
    assert stop == {0.5: "eos", 1.0: "eos", 0.0: "max_new_tokens", -100.0: "context"}[eos_bias]
    assert len(stats.rounds) == len(tokens) - 1
    assert state.length == state.cache.length == len(state.prompt_ids) + len(tokens) - 1
    if stop != "context" and len(longer.tokens) > len(tokens):
        nxt = target.score(state, torch.tensor([tokens[-1]])).logits[0].argmax()
        assert int(nxt) == longer.tokens[len(tokens)]


def test_generate_takes_the_chain_only_where_it_is_lossless() -> None:
    target = TinyLM(31)
    plain = generate(target, Request("abc"), max_new_tokens=12)  # dynamic cache: host loop
    assert not chainable(target, target.prefill(Request("abc")))
    target.enable_fast()
    calls = []
    real = target.greedy_chain
    target.greedy_chain = lambda *a, **k: calls.append(a) or real(*a, **k)
    streamed: list[list[int]] = []
    res = generate(target, Request("abc"), max_new_tokens=12, on_token=streamed.append)
    assert res.tokens == plain.tokens and res.stats.new_tokens == len(plain.tokens)
    assert [t for chunk in streamed for t in chunk] == res.tokens  # streamed as each chunk arrives
    assert calls and len(streamed) >= 2
    calls.clear()
    generate(target, Request("abc"), max_new_tokens=12, temperature=0.7)
    generate(target, Request("abc"), max_new_tokens=12, device_greedy=False)
    assert not calls
    with pytest.raises(RuntimeError, match="fast path"):
        target.disable_fast()
        target.greedy_chain(target.prefill(Request("abc")), 2, 5)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
def test_graphed_chain_equals_eager_chain() -> None:
    model = _model(6, device="cuda")
    fast, cache_g, graphed = _pair(model, (1, 2, 4), 16, graphs=True)
    _, cache_e, eager = _pair(model, (1, 2, 4), 16)
    with torch.inference_mode():
        for c in (cache_g, cache_e):
            fast.forward(c, 0, tokens=torch.arange(3, 14, device="cuda"))
            c.advance(11)
        made = graphed.prepare([1], 11, 40, scratch=11, greedy=True)
        assert made and sum(kind == "greedy" for kind, _, _ in graphed.stats.shapes) == len(made) // 2
        a = graphed.chain(11, 30, torch.tensor([5]))
        b = eager.chain(11, 30, torch.tensor([5]))
    assert a.tolist() == b.tolist()
    assert graphed.stats.replays >= 30


@pytest.mark.parametrize("chunk", [1, 2, 3, 8])
def test_at_most_one_chunk_runs_past_eos_and_each_chunk_is_timed_alone(chunk: int) -> None:
    """Chunks are queued one ahead of the one read: after the chunk holding EOS at most one
    more ran; each token's ``score_ms`` is the time of the chunk that computed it (a slow
    chunk's time is not charged to its neighbours)."""
    import time

    target = TinyLM(22, eos_bias=0.5)
    target.enable_fast(kv_granularity=16)
    q = Request("abcab xy")
    host = generate(target, q, max_new_tokens=60, device_greedy=False)
    assert host.stats.stop_reason == "eos"
    state = target.prefill(q)
    first = int(state.last_logits.argmax())
    eos_step = len(host.tokens) - 1  # the chain step that produces EOS (1-based)
    chunks: list[int] = []
    real = target.greedy_chain
    slow = 1 + (eos_step - 1) // chunk  # the chunk holding EOS sleeps: its time is its own

    def counted(st, n, f=None):
        chunks.append(n)
        if len(chunks) == slow:
            time.sleep(0.4)
        return real(st, n, f)

    target.greedy_chain = counted
    stats = RequestStats(drafter="none", gamma=0)
    tokens, stop = chained_greedy(target, state, first, max_new_tokens=60, eos=target.eos_token_id,
                                  stats=stats, chunk=chunk)
    assert (tokens, stop) == (host.tokens, "eos")
    ran = sum(chunks)
    eos_chunk_end = slow * chunk
    assert eos_chunk_end <= ran <= eos_chunk_end + chunk  # at most one chunk past the EOS chunk
    times = [r.score_ms for r in stats.rounds]
    in_slow = times[(slow - 1) * chunk:]
    before = times[:(slow - 1) * chunk]
    assert min(in_slow) >= 400 / chunk * 0.9
    assert all(t < 400 / chunk * 0.5 for t in before)
