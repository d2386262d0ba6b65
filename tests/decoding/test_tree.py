"""Tree speculative decoding: tree attention equals straight decoding, greedy output equals
target-only output, sampled output has the target's law (chi^2, with a power check)."""

from __future__ import annotations

import random

import pytest
import torch

from markov_doubles import MarkovLM, chi2_pvalue, random_markov
from engine_doubles import EOS, TinyTextLM
from evspec.decoding.engine import generate
from evspec.decoding.tree import DraftTree, TreeControl, TreeDrafter, TreeShape, generate_tree, verify_tree
from evspec.models.request import Request
from evspec.models.tree_attention import ancestor_matrix, keep_path, score_tree


def test_tree_pass_equals_straight_passes_and_keep_path_compacts():
    m = TinyTextLM(seed=0)
    req = Request(question="tree")
    # root 5; children 9, 6; 6 -> 7, 3; 7 -> 8 ; path 0-2-3-5 spells 5 6 7 8
    tokens, parents = torch.tensor([5, 9, 6, 7, 3, 8]), [-1, 0, 0, 2, 2, 3]
    straight = m.prefill(req)
    lin = m.score(straight, torch.tensor([5, 6, 7, 8])).logits  # [4, V]
    st = m.prefill(req)
    out = score_tree(m, st, tokens, parents).logits  # [6, V]
    assert torch.allclose(out[[0, 2, 3, 5]], lin, atol=1e-5)
    other = m.prefill(req)  # the branch 5 6 3
    assert torch.allclose(out[4], m.score(other, torch.tensor([5, 6, 3])).logits[-1], atol=1e-5)
    keep_path(m, st, 6, [0, 2, 3, 5])
    assert st.length == straight.length and st.cache.get_seq_length() == st.length
    nxt = torch.tensor([11])
    assert torch.allclose(m.score(st, nxt).logits, m.score(straight, nxt).logits, atol=1e-5)


def test_ancestor_matrix_and_bad_parents():
    anc = ancestor_matrix([-1, 0, 0, 1])
    assert anc.tolist() == [[1, 0, 0, 0], [1, 1, 0, 0], [1, 0, 1, 0], [1, 1, 0, 1]]
    m = TinyTextLM(seed=0)
    st = m.prefill(Request(question="x"))
    with pytest.raises(ValueError):
        score_tree(m, st, torch.tensor([1, 2]), [-1, 1])  # a node cannot be its own parent
    with pytest.raises(ValueError):
        TreeShape.uniform(0, 2)
    with pytest.raises(ValueError):
        TreeShape((8,) * 4)  # 4680 nodes


@pytest.mark.parametrize("block", range(2))
def test_greedy_tree_identical_to_target(block):
    rng = random.Random(500 + block)
    targets = [TinyTextLM(seed=block), TinyTextLM(seed=block + 10, eos_bias=3.0)]
    drafts = [TinyTextLM(seed=block + 20), targets[0]]
    for case in range(10):
        target = targets[case % 2]
        draft = drafts[(case // 2) % 2]
        req = Request(question="".join(rng.choice("abcdefg ") for _ in range(rng.randint(1, 25))))
        max_new = rng.randint(1, 30)
        shape = tuple(rng.randint(1, 3) for _ in range(rng.randint(1, 4)))
        ref = generate(target, req, None, max_new_tokens=max_new)
        res = generate_tree(target, req, draft, branching=shape, max_new_tokens=max_new)
        assert res.tokens == ref.tokens, (case, shape)
        assert res.stats.stop_reason == ref.stats.stop_reason
        if draft is target and EOS not in res.tokens and len(res.stats.rounds) > 1:
            assert res.stats.rounds[0].accepted == res.stats.rounds[0].drafted  # self-drafting


def test_branches_accept_more_than_a_chain():
    """A drafter that is a slightly perturbed copy of the target: its top-1 is often
    wrong where its top-4 still holds the target's token, so branches raise τ."""
    target, draft = TinyTextLM(seed=1), TinyTextLM(seed=1)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in draft.model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.02)
    req = Request(question="branches help")
    chain = generate_tree(target, req, draft, branching=(1, 1, 1), max_new_tokens=60, stop_at_eos=False)
    wide = generate_tree(target, req, draft, branching=(4, 2, 1), max_new_tokens=60, stop_at_eos=False)
    assert chain.tokens == wide.tokens == generate(target, req, None, max_new_tokens=60, stop_at_eos=False).tokens
    assert wide.stats.tau > chain.stats.tau + 0.3


V = 3
P_T, Q_D = random_markov(V, 10), random_markov(V, 11)
RUNS = 1200


def _joint(runs: int, branching) -> torch.Tensor:
    counts = torch.zeros(V, V, V)
    target, draft = MarkovLM(P_T), MarkovLM(Q_D)
    for seed in range(runs):
        t = generate_tree(target, Request(question="x"), draft, branching=branching, max_new_tokens=4,
                          temperature=1.0, seed=seed).tokens
        counts[t[0], t[1], t[2]] += 1
    return counts


def _markov_joint(P):
    return P[0][:, None, None] * P[:, :, None] * P[None, :, :]


def test_sampled_tree_has_the_target_distribution():
    counts = _joint(RUNS, (2, 2))
    assert chi2_pvalue(counts, _markov_joint(P_T)) > 1e-3


def test_the_test_detects_deterministic_branches_under_sampling(monkeypatch):
    """Power check: top-b children (not draws from q) with the sampling rule are biased."""
    orig = TreeDrafter._children

    def topb(self, logits, b, temperature, gen):
        _, q = orig(self, logits, b, temperature, gen)
        return torch.topk(q, min(b, int((q > 0).sum()))).indices.tolist(), q

    monkeypatch.setattr(TreeDrafter, "_children", topb)
    counts = _joint(500, (2, 2))
    assert chi2_pvalue(counts, _markov_joint(P_T)) < 1e-3


def test_verify_tree_rejection_over_siblings_exact_law():
    """One node, two sampled children: the emitted first token has law p exactly (chi^2
    over many draws through verify_tree alone)."""
    p = torch.tensor([0.5, 0.3, 0.15, 0.05])
    q = torch.tensor([0.1, 0.2, 0.3, 0.4])
    gen = torch.Generator().manual_seed(0)
    counts = torch.zeros(4)
    logits = p.log()[None].expand(3, -1)
    for _ in range(6000):
        kids = torch.multinomial(q, 2, replacement=False, generator=gen).tolist()
        tree = DraftTree(tokens=[0, *kids], parents=[-1, 0, 0], q=[q, None, None])
        path, nxt = verify_tree(logits, tree, temperature=1.0, generator=gen)
        first = tree.tokens[path[0]] if path else nxt
        counts[first] += 1
    assert chi2_pvalue(counts, p) > 1e-3


def test_acceptance_control_sets_the_rank_hit_rate():
    target, draft = TinyTextLM(seed=3), TinyTextLM(seed=4)
    req = Request(question="controlled")
    reference = [5, 6, 7, 8, 9, 10, 11, 12, 13, 14] * 6
    control = TreeControl(rank_alpha=(0.5, 0.3), vocab_size=target.vocab_size, seed=0)
    res = generate_tree(target, req, draft, branching=(2, 2, 2), max_new_tokens=60, stop_at_eos=False,
                        forced_reference=reference, control=control)
    assert res.tokens == reference
    # per-depth hit rate 0.8: tau = 1 + .8 + .64 + .512 = 2.95
    assert 2.3 < res.stats.tau < 3.5
