"""Token trees from a trained draft head (``HeadTreeDrafter``): a one-branch tree is the
chain drafter, wider trees stay lossless (greedy identical to target-only; sampling runs
through the tree's rejection rule) and accept at least as much per pass as the chain."""

from __future__ import annotations

import pytest
import torch

from evspec.modules.head import DraftHead, HeadConfig
from evspec.modules.layers import causal_mask
from evspec.decoding.drafters import make_drafter
from evspec.decoding.engine import generate
from evspec.decoding.tree import HeadTreeDrafter, generate_tree


def test_extend_tree_with_a_chain_mask_is_extend() -> None:
    torch.manual_seed(0)
    head = DraftHead(HeadConfig(hidden_size=32, num_layers=2, num_heads=4)).eval()
    a, b = head.new_cache(), head.new_cache()
    h0, e0 = torch.randn(3, 32), torch.randn(3, 32)
    torch.testing.assert_close(head.extend(a, h0, e0), head.extend(b, h0, e0))
    h1, e1 = torch.randn(2, 32), torch.randn(2, 32)
    want = head.extend(a, h1, e1)
    got = head.extend_tree(b, h1, e1, torch.tensor([3, 4]), causal_mask(2, "cpu", offset=3))
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="mask"):
        head.extend_tree(b, h1, e1, torch.tensor([5, 6]), torch.ones(2, 3, dtype=torch.bool))


@pytest.mark.parametrize("kind", ["target-head", "event-head"])
def test_a_one_branch_tree_is_the_chain(kind, ckpts, requests, target, eventgpt):
    chain = make_drafter(kind, target=target, draft_model=eventgpt, head_path=ckpts[kind])
    tree = HeadTreeDrafter(make_drafter(kind, target=target, draft_model=eventgpt, head_path=ckpts[kind]))
    for req in requests:
        a = generate(target, req, chain, gamma=3, max_new_tokens=12)
        b = generate_tree(target, req, tree, branching=(1, 1, 1), max_new_tokens=12)
        assert b.tokens == a.tokens
        assert [r.accepted for r in b.stats.rounds] == [r.accepted for r in a.stats.rounds]
        assert b.stats.drafter == f"{kind} tree(1, 1, 1)"


@pytest.mark.parametrize("shape", [(2, 1), (3, 2, 1), (2, 2, 2, 1)])
def test_head_trees_are_lossless_and_accept_at_least_the_chain(shape, ckpts, requests, target, eventgpt):
    head = make_drafter("event-head", target=target, draft_model=eventgpt, head_path=ckpts["event-head"])
    tree = HeadTreeDrafter(head)
    for req in requests:
        base = generate(target, req, None, max_new_tokens=14)
        chain = generate_tree(target, req, tree, branching=(1,) * len(shape), max_new_tokens=14)
        wide = generate_tree(target, req, tree, branching=shape, max_new_tokens=14)
        assert wide.tokens == chain.tokens == base.tokens
        # the top-1 path is in every greedy tree: per pass at least as many tokens
        assert len(wide.stats.rounds) <= len(chain.stats.rounds)
        sampled = generate_tree(target, req, tree, branching=shape, max_new_tokens=14, temperature=0.9, seed=3)
        assert 1 <= len(sampled.tokens) <= 14


def test_head_tree_errors(ckpts, requests, target, eventgpt):
    tree = HeadTreeDrafter(make_drafter("target-head", target=target, head_path=ckpts["target-head"]))
    state = target.prefill(requests[0])  # no hidden states asked for
    with pytest.raises(ValueError, match="hidden"):
        tree.begin(requests[0], target, 1, state)
    with pytest.raises(RuntimeError, match="before begin"):
        tree.grow(__import__("evspec.decoding.tree", fromlist=["TreeShape"]).TreeShape((2,)), 0.0, None)
