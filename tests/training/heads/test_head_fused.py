"""The event-head's folded memory cross-attention: the same function as the block's
cross-attention (float rounding apart), the same drafts in the static runner, the Triton
kernel equal to its torch form (on a GPU, or on the CPU under ``TRITON_INTERPRET=1``), and
the automatic choice."""

from __future__ import annotations

import pytest
import torch

from evspec.modules.head import DraftHead, HeadConfig
from evspec.modules.head_fused import fold_memory, fold_pays, folded_cross, folded_cross_reference
from evspec.modules.head_static import StaticHeadRunner
from evspec.models.fast.triton_support import available as triton_available


def _head(width=32, heads=4, mem=24, layers=2, seed=0):
    torch.manual_seed(seed)
    cfg = HeadConfig(hidden_size=width, num_layers=layers, num_heads=heads, memory_source="events",
                     memory_size=mem, max_positions=48)
    head = DraftHead(cfg).eval()
    for blk in head.blocks:  # non-trivial norm gains
        torch.nn.init.normal_(blk.cross_norm.weight, 1.0, 0.2)
    return head


@pytest.mark.parametrize("memory_len", [7, 16])
def test_fold_is_the_cross_attention(memory_len):
    head = _head()
    kv = head.drafting_memory(torch.randn(memory_len, 24))
    x = torch.randn(1, 5, 32)
    for blk, kv_i in zip(head.blocks, kv):
        want = x + blk.cross(blk.cross_norm(x), kv_i)
        fold = fold_memory(blk, kv_i)
        assert fold.m == memory_len and fold.a.shape == (32, 4 * memory_len)
        torch.testing.assert_close(folded_cross_reference(x, fold), want, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(folded_cross(x[:, :1], fold), want[:, :1], rtol=1e-5, atol=1e-5)


def test_folded_runner_drafts_what_the_unfolded_one_drafts():
    head = _head()
    vocab = 50
    embed, lm_head = torch.nn.Embedding(vocab, 32), torch.nn.Linear(32, vocab, bias=False)
    folded = StaticHeadRunner(head, embed, lm_head, max_feed=5, max_chain=4, fold_memory=True)
    plain = StaticHeadRunner(head, embed, lm_head, max_feed=5, max_chain=4, fold_memory=False)
    gen = torch.Generator().manual_seed(1)
    for r in (folded, plain):
        r.begin(torch.randn(9, 24, generator=torch.Generator().manual_seed(2)))
    assert type(folded.mem[0]).__name__ == "FoldedMemory" and isinstance(plain.mem[0], tuple)
    for n_feed, k in ((1, 4), (4, 3), (5, 4), (2, 2)):
        hidden = torch.randn(n_feed, 32, generator=gen)
        tokens = torch.randint(0, vocab, (n_feed,), generator=gen).tolist()
        torch.testing.assert_close(folded.feed(hidden, tokens), plain.feed(hidden, tokens),
                                   rtol=1e-5, atol=1e-5)
        assert folded.greedy_chain(k).tolist() == plain.greedy_chain(k).tolist()
    # a request with another memory length gets new buffers, still folded
    folded.begin(torch.randn(12, 24))
    assert folded.mem[0].m == 12


def test_fold_is_chosen_where_it_pays():
    assert fold_pays(256, 4, 69)  # the world's event-head
    assert not fold_pays(4096, 32, 600)  # a 7B-shaped head keeps its projections
    head = _head()
    runner = StaticHeadRunner(head, torch.nn.Embedding(10, 32), torch.nn.Linear(32, 10, bias=False))
    runner.begin(torch.randn(5, 24))
    assert isinstance(runner.mem[0], tuple) == (not triton_available(torch.device("cpu")))


@pytest.mark.skipif(not triton_available(torch.device("cuda" if torch.cuda.is_available() else "cpu")),
                    reason="needs Triton on a GPU, or TRITON_INTERPRET=1")
@pytest.mark.parametrize("width,heads,memory_len", [(32, 4, 7), (48, 3, 16), (256, 4, 69)])
def test_kernel_equals_the_torch_fold(width, heads, memory_len):
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    head = _head(width=width, heads=heads, mem=24, layers=1).to(device)
    kv = head.drafting_memory(torch.randn(memory_len, 24, device=device))
    fold = fold_memory(head.blocks[0], kv[0])
    for rows in (1, 5):
        x = torch.randn(1, rows, width, device=device)
        torch.testing.assert_close(folded_cross(x, fold), folded_cross_reference(x, fold),
                                   rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("fold", [True, False])
def test_folded_event_head_is_lossless(ckpts, requests, target, eventgpt, fold):
    from evspec.decoding.drafters import make_drafter
    from evspec.decoding.engine import generate

    drafter = make_drafter("event-head", target=target, draft_model=eventgpt,
                           head_path=ckpts["event-head"], static=True, fold_memory=fold)
    for req in requests:
        base = generate(target, req, None, max_new_tokens=10)
        assert generate(target, req, drafter, gamma=3, max_new_tokens=10).tokens == base.tokens
    assert drafter.memory_folded == fold


def test_automatic_fold_falls_back_when_the_kernel_fails(monkeypatch):
    import evspec.modules.head_fused as fused
    import evspec.modules.head_static as static

    head = _head()
    monkeypatch.setattr(static, "triton_available", lambda device: True)

    def broken(x, fold):
        raise RuntimeError("no kernel here")

    monkeypatch.setattr(fused, "folded_cross", broken)
    runner = StaticHeadRunner(head, torch.nn.Embedding(10, 32), torch.nn.Linear(32, 10, bias=False))
    with pytest.warns(UserWarning, match="unavailable"):
        runner.begin(torch.randn(5, 24))
    assert isinstance(runner.mem[0], tuple) and runner._kernel_ok is False
    runner.begin(torch.randn(5, 24))  # checked once
    assert isinstance(runner.mem[0], tuple)
