"""γ policies: acceptance counting, the posterior-optimal γ, and the engine hook."""

from __future__ import annotations

import random

import pytest
import torch

from engine_doubles import TinyTextLM
from evspec.bench.theory import best_gamma
from evspec.decoding.drafters import ModelDrafter
from evspec.decoding.engine import generate
from evspec.decoding.gamma import DynamicGamma, FixedGamma, GammaPolicy, expected_tau
from evspec.decoding.stats import RoundStats
from evspec.models.request import Request
from test_greedy_lossless import OracleDrafter


def test_counting_is_successes_plus_one_failure_per_short_round():
    pol = DynamicGamma(prior_alpha=0.5, prior_strength=2.0, window=10)
    pol.observe(RoundStats(drafted=8, accepted=2))  # 2 successes, 1 failure (not 6)
    pol.observe(RoundStats(drafted=4, accepted=4))  # 4 successes, no failure
    pol.observe(RoundStats(drafted=0, accepted=0))  # nothing tried: ignored
    a, b = pol.posterior()
    assert (a, b) == (1.0 + 6, 1.0 + 1)


def test_expected_tau_matches_monte_carlo_and_point_mass():
    gen = torch.Generator().manual_seed(0)
    a, b = 3.0, 2.0
    alphas = torch.distributions.Beta(a, b).sample((200_000,))
    mc = ((1 - alphas ** 5) / (1 - alphas)).mean().item()
    assert expected_tau(a, b, 4) == pytest.approx(mc, rel=5e-3)
    # a very confident posterior reduces to theory's tau
    assert expected_tau(7e5, 3e5, 3) == pytest.approx(1 + 0.7 + 0.49 + 0.343, rel=1e-4)
    del gen


@pytest.mark.parametrize("alpha,c", [(0.9, 0.05), (0.6, 0.1), (0.3, 0.3), (0.8, 0.8)])
def test_confident_posterior_picks_theory_best_gamma(alpha, c):
    pol = DynamicGamma(c=c, max_gamma=12, prior_alpha=alpha, prior_strength=1e6)
    assert pol.next_gamma([]) == best_gamma(alpha, c, max_gamma=12)


def test_converges_to_the_best_gamma_from_observed_rounds():
    rng = random.Random(0)
    alpha, c = 0.85, 0.05
    pol = DynamicGamma(c=c, max_gamma=10, prior_alpha=0.2, window=400)
    for _ in range(400):
        k = pol.next_gamma([])
        n = 0
        while n < k and rng.random() < alpha:
            n += 1
        pol.observe(RoundStats(k, n))
    assert abs(pol.alpha - alpha) < 0.05
    assert abs(pol.next_gamma([]) - best_gamma(alpha, c, max_gamma=10)) <= 1


def test_min_gamma_zero_stops_drafting_and_probes():
    pol = DynamicGamma(c=1.0, max_gamma=4, prior_alpha=0.05, prior_strength=50, min_gamma=0, probe_every=4)
    picks = [pol.next_gamma([]) for _ in range(8)]
    assert picks == [0, 0, 0, 1, 0, 0, 0, 1]


def test_measured_c_replaces_the_start_value():
    pol = DynamicGamma(c=0.5, window=4, measure_c=True)
    for _ in range(4):
        pol.observe(RoundStats(drafted=2, accepted=1, draft_ms=2.0, score_ms=10.0))
    assert pol.cost == pytest.approx(0.1)


@pytest.mark.parametrize("bad", [dict(c=-1), dict(max_gamma=0), dict(prior_alpha=1.0), dict(window=0), dict(min_gamma=2)])
def test_bad_config_is_refused(bad):
    with pytest.raises(ValueError):
        DynamicGamma(**bad)
    with pytest.raises(ValueError):
        FixedGamma(0)


def test_engine_uses_the_policy_and_stays_lossless():
    target = TinyTextLM(seed=3)
    for q in ("abc", "hello world", "xyz xyz"):
        req = Request(question=q)
        ref = generate(target, req, None, max_new_tokens=30)
        pol = DynamicGamma(c=0.05, max_gamma=6, prior_alpha=0.9)
        seen: list[int] = []

        class Spy:
            max_gamma = pol.max_gamma

            def next_gamma(self, history):
                g = pol.next_gamma(history)
                seen.append(g)
                return g

            def observe(self, round):
                pol.observe(round)

        assert isinstance(Spy(), GammaPolicy)
        drafter = OracleDrafter(ref.tokens, 0.6, target.vocab_size, seed=1)
        res = generate(target, req, drafter, max_new_tokens=30, gamma_policy=Spy())
        assert res.tokens == ref.tokens
        assert res.stats.gamma == 6
        assert len(seen) == len(res.stats.rounds)
        assert all(r.drafted <= g for r, g in zip(res.stats.rounds, seen))
        # a fixed policy is exactly gamma=
        fixed = generate(target, req, ModelDrafter(TinyTextLM(seed=9)), max_new_tokens=30, gamma_policy=FixedGamma(3))
        plain = generate(target, req, ModelDrafter(TinyTextLM(seed=9)), max_new_tokens=30, gamma=3)
        assert fixed.tokens == plain.tokens == ref.tokens
        assert [r.drafted for r in fixed.stats.rounds] == [r.drafted for r in plain.stats.rounds]


def test_policy_answering_zero_means_target_steps():
    target = TinyTextLM(seed=4)
    req = Request(question="zero")
    ref = generate(target, req, None, max_new_tokens=12)
    zero = FixedGamma(1)
    zero.next_gamma = lambda history: 0  # type: ignore[method-assign]
    res = generate(target, req, ModelDrafter(target), max_new_tokens=12, gamma_policy=zero)
    assert res.tokens == ref.tokens
    assert all(r.drafted == 0 for r in res.stats.rounds)
