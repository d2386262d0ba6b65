"""The acceptance rule preserves the target distribution; seeds make runs repeatable."""

from __future__ import annotations

import pytest
import torch

from engine_doubles import FixedDrafter, FixedTarget, TinyTextLM
from evspec.decoding.drafters import ModelDrafter
from evspec.decoding.engine import generate
from evspec.decoding.sampling import logits_to_probs, verify
from evspec.models.request import Request

V = 6
N = 20_000  # cell s.e. <= 0.0035; a 2 % total-variation error moves chi^2 far past the cutoff


def chi2_pvalue(counts: torch.Tensor, p: torch.Tensor) -> float:
    """Pearson chi^2 goodness of fit over the cells where p > 0 (p = 0 cells must be empty)."""
    n = counts.sum()
    support = p > 0
    assert counts[~support].sum() == 0, f"mass outside the target's support: {counts}"
    exp = n * p[support]
    stat = ((counts[support] - exp) ** 2 / exp).sum()
    df = int(support.sum()) - 1
    if df == 0:
        return 1.0
    return float(torch.special.gammaincc(torch.tensor(df / 2.0, dtype=torch.float64), stat.double() / 2))


def emitted_first_two(p: torch.Tensor, q: torch.Tensor | None, token: int | None, k: int, seed: int):
    """Emit one round's output ``N`` times; return counts of its first and second token."""
    gen = torch.Generator().manual_seed(seed)
    logits = p.log().expand(k + 1, -1)
    c0, c1 = torch.zeros(V), torch.zeros(V)
    for _ in range(N):
        if q is None:
            d, probs = torch.full((k,), token), None
        else:
            d, probs = torch.multinomial(q, k, replacement=True, generator=gen), q.expand(k, -1)
        v = verify(logits, d, probs, temperature=1.0, generator=gen)
        out = d[: v.n_accepted].tolist() + [v.next_token]
        c0[out[0]] += 1
        if len(out) > 1:
            c1[out[1]] += 1
    return c0, c1


P = torch.tensor([0.30, 0.25, 0.20, 0.15, 0.10, 0.00])
CASES = {
    "p_equals_q": (P, P.clone(), None),
    "general": (P, torch.tensor([0.05, 0.05, 0.10, 0.20, 0.30, 0.30]), None),
    "disjoint_support": (torch.tensor([0.5, 0.5, 0, 0, 0, 0.0]), torch.tensor([0, 0, 0.2, 0.3, 0.5, 0.0]), None),
    "one_hot_draft": (P, None, 1),
    "one_hot_outside_support": (P, None, 5),
}


@pytest.mark.parametrize("name", list(CASES))
def test_verify_preserves_target_distribution(name):
    p, q, token = CASES[name]
    c0, c1 = emitted_first_two(p, q, token, k=3, seed=7)
    assert chi2_pvalue(c0, p) > 1e-3, (name, c0 / c0.sum())
    if c1.sum() > 2000:  # the second emitted token (exists when d_1 was accepted)
        assert chi2_pvalue(c1, p) > 1e-3, (name, c1 / c1.sum())


def test_greedy_verify_keeps_the_matching_prefix_and_takes_the_argmax():
    logits = torch.full((4, 10), -1.0)
    for row, best in enumerate([3, 7, 2, 9]):  # the target's argmax at each position
        logits[row, best] = 5.0
    cases = [([3, 7, 2], (3, 9)), ([3, 1, 2], (1, 7)), ([0, 7, 2], (0, 3))]
    for drafts, (n, nxt) in cases:
        v = verify(logits, torch.tensor(drafts), None, temperature=0.0)
        assert (v.n_accepted, v.next_token) == (n, nxt)
    plain = verify(logits[:1], torch.zeros(0, dtype=torch.long), None, temperature=0.0)  # a target-only step
    assert (plain.n_accepted, plain.next_token) == (0, 3)


def test_the_test_detects_a_two_percent_error():
    """Power check: a sampler off by 2 % total variation must fail the same test."""
    p = P
    wrong = p + torch.tensor([0.02, -0.02, 0, 0, 0, 0])
    gen = torch.Generator().manual_seed(3)
    counts = torch.bincount(torch.multinomial(wrong, N, replacement=True, generator=gen), minlength=V).float()
    assert chi2_pvalue(counts, p) < 1e-3


def test_engine_sampling_matches_target_end_to_end():
    """Through the whole engine: the first verified token (answer position 1) follows p."""
    p, q = CASES["general"][0], CASES["general"][1]
    target = FixedTarget(p)
    counts = torch.zeros(V)
    for seed in range(4000):
        res = generate(target, Request(question="x"), FixedDrafter(q), gamma=2, max_new_tokens=3,
                       temperature=1.0, seed=seed)
        counts[res.tokens[1]] += 1
    assert chi2_pvalue(counts, p) > 1e-3, counts / counts.sum()


def test_top_p_filters_the_tail():
    probs = logits_to_probs(torch.tensor([3.0, 2.0, 1.0, -5.0]), 1.0, top_p=0.7)
    assert probs[3] == 0 and probs[0] > 0 and abs(float(probs.sum()) - 1) < 1e-6


def test_same_seed_same_output_and_seed_matters():
    target, drafter_model = TinyTextLM(seed=0, vocab=40), TinyTextLM(seed=1, vocab=40)
    req = Request(question="seeded")
    with torch.no_grad():  # flatten the tiny models so sampling is genuinely random
        for m in (target, drafter_model):
            m.lm_head.weight.div_(8.0)
    runs = [
        generate(target, req, ModelDrafter(drafter_model), gamma=3, max_new_tokens=20, temperature=1.0, seed=s).tokens
        for s in (11, 11, 12)
    ]
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]


@pytest.mark.parametrize("bad", [dict(gamma=0), dict(temperature=-0.1), dict(top_p=0.0), dict(max_new_tokens=0)])
def test_bad_arguments_are_refused(bad):
    target = TinyTextLM(seed=0)
    with pytest.raises(ValueError):
        generate(target, Request(question="q"), ModelDrafter(target), **bad)


@pytest.mark.parametrize("name", ["general", "one_hot_draft"])
def test_verify_preserves_a_bf16_target_distribution(name):
    """p and q as a bf16 model gives them (logits rounded to bf16, softmax in float32)."""
    p, q, token = CASES[name]
    p16 = torch.softmax(p.log().bfloat16().float(), -1)
    q16 = None if q is None else torch.softmax(q.log().bfloat16().float(), -1)
    c0, c1 = emitted_first_two(p16, q16, token, k=3, seed=11)
    assert chi2_pvalue(c0, p16) > 1e-3, (name, c0 / c0.sum())
    if c1.sum() > 2000:
        assert chi2_pvalue(c1, p16) > 1e-3, (name, c1 / c1.sum())


def test_bf16_fast_engine_sampling_matches_the_target_end_to_end():
    """A bf16 target on the fast engine (exact numerics) drafted for by another bf16 model:
    the first verified token (answer position 1) follows the target's marginal
    sum_t0 p(t0) p(t1 | t0), computed from one-token steps."""
    vocab = 8

    def model(seed: int) -> TinyTextLM:
        m = TinyTextLM(vocab=vocab, seed=seed)
        with torch.no_grad():
            m.lm_head.weight.div_(8.0)  # undo the sharpening: every token likely
        m.model.to(torch.bfloat16)
        m.enable_fast()
        return m

    target, draft = model(41), model(42)
    req = Request(question="ab")
    state = target.prefill(req)
    p0 = torch.softmax(state.last_logits.double(), -1)
    target.release(state)
    marginal = torch.zeros(vocab, dtype=torch.float64)
    for t0 in range(vocab):
        st = target.prefill(req)
        logits = target.score(st, torch.tensor([t0])).logits[0]
        marginal += p0[t0] * torch.softmax(logits.double(), -1)
        target.release(st)
    counts = torch.zeros(vocab)
    drafter = ModelDrafter(draft, name="tiny")
    for seed in range(1500):
        res = generate(target, req, drafter, gamma=2, max_new_tokens=2, temperature=1.0, seed=seed,
                       stop_at_eos=False)
        counts[res.tokens[1]] += 1
    assert chi2_pvalue(counts, marginal.float()) > 1e-3, (counts / counts.sum(), marginal)
