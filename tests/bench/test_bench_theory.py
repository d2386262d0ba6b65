"""The cost model against hand-computed values, its edges, and a simulation."""

from __future__ import annotations

import numpy as np
import pytest

from evspec.bench import theory


def test_tau_hand_values():
    assert theory.expected_tokens_per_round(0.5, 2) == pytest.approx(1.75)  # 1 + .5 + .25
    assert theory.expected_tokens_per_round(0.8, 4) == pytest.approx((1 - 0.8**5) / 0.2)
    assert theory.expected_tokens_per_round(0.8, 4) == pytest.approx(3.3616)
    assert theory.expected_tokens_per_round(0.25, 1) == pytest.approx(1.25)


@pytest.mark.parametrize("gamma", [0, 1, 4, 8])
def test_tau_edges(gamma):
    assert theory.expected_tokens_per_round(0.0, gamma) == 1.0  # only the target's token
    assert theory.expected_tokens_per_round(1.0, gamma) == gamma + 1  # all drafts accepted
    # continuity at alpha -> 1 (the closed form is 0/0 there)
    assert theory.expected_tokens_per_round(1 - 1e-9, gamma) == pytest.approx(gamma + 1, rel=1e-6)


def test_speedup_hand_values():
    assert theory.speedup(0.8, 4, 0.05) == pytest.approx(3.3616 / 1.2)
    assert theory.speedup(0.5, 2, 0.1) == pytest.approx(1.75 / 1.2)
    # alpha = 0: every round costs gamma*c + 1 passes for one token
    assert theory.speedup(0.0, 4, 0.25) == pytest.approx(1 / 2)
    # alpha = 1, free drafter: gamma + 1 tokens per pass
    assert theory.speedup(1.0, 4, 0.0) == pytest.approx(5.0)
    # the research note's case: alpha = 0 cannot give 3.3x (DESIGN.md)
    assert theory.speedup(0.0, 5, 0.7) < 1
    # verification cost: a pass twice as costly halves the speedup
    assert theory.speedup(0.8, 4, 0.05, verify_cost=2.0) == pytest.approx(3.3616 / 2.2)


def test_speculation_pays_only_when_alpha_exceeds_c():
    assert theory.speedup(0.3, 1, 0.5) < 1 < theory.speedup(0.6, 1, 0.5)
    assert theory.speedup(0.5, 1, 0.5) == pytest.approx(1.0)


def test_speedup_for_rounds():
    # constant k = γ: the plain formula
    assert theory.speedup_for_rounds(0.8, [4, 4, 4], 0.05) == pytest.approx(theory.speedup(0.8, 4, 0.05))
    # k = 2 and 0: tokens (1.75 + 1) / 2, cost (1 * 0.1 + 1)
    assert theory.speedup_for_rounds(0.5, [2, 0], 0.1) == pytest.approx(1.375 / 1.1)
    assert theory.speedup_for_rounds(1.0, [3, 1], 0.0, verify_cost=2.0) == pytest.approx(3.0 / 2.0)
    with pytest.raises(ValueError, match="at least one round"):
        theory.speedup_for_rounds(0.5, [], 0.1)


def test_best_gamma():
    # brute force, written independently
    for alpha, c in [(0.8, 0.05), (0.6, 0.1), (0.9, 0.02), (0.3, 0.2)]:
        gains = {g: (1 - alpha ** (g + 1)) / (1 - alpha) / (g * c + 1) for g in range(1, 17)}
        assert theory.best_gamma(alpha, c) == max(gains, key=gains.get)
    assert theory.best_gamma(0.8, 0.05) == 8  # hand table: S(7)=3.0823, S(8)=3.0921, S(9)=3.0780
    assert theory.best_gamma(0.0, 0.1) == 1  # nothing is accepted: draft as little as possible
    assert theory.best_gamma(1.0, 0.0, max_gamma=12) == 12  # unbounded gain: the cap
    assert theory.best_gamma(1.0, 1.0) == 1  # all equal (S = 1): smallest
    assert theory.speedup(0.3, theory.best_gamma(0.3, 0.5), 0.5) < 1  # alpha < c: never pays


def test_alpha_from_rounds_hand_value_and_simulation():
    # (drafted, accepted): 4 of 4 (no failure), 1 of 4 (1 failure), 0 of 4 (1 failure)
    assert theory.alpha_from_rounds([(4, 4), (4, 1), (4, 0)]) == pytest.approx(5 / 7)
    assert theory.alpha_from_rounds([]) is None
    assert theory.alpha_from_rounds([(3, 3)]) == 1.0
    # simulate the model: the estimate recovers alpha, and mean accepted + 1 matches tau
    rng = np.random.default_rng(0)
    alpha, gamma = 0.6, 4
    rounds = []
    for _ in range(20000):
        n = 0
        while n < gamma and rng.random() < alpha:
            n += 1
        rounds.append((gamma, n))
    assert theory.alpha_from_rounds(rounds) == pytest.approx(alpha, abs=0.01)
    tau = np.mean([n + 1 for _, n in rounds])
    assert tau == pytest.approx(theory.expected_tokens_per_round(alpha, gamma), abs=0.03)
    assert np.mean([n for _, n in rounds]) / gamma < alpha - 0.1  # accepted/drafted underestimates


def test_measured_c():
    # 2 ms per drafted token, 10 ms per score pass
    assert theory.measured_c(draft_ms=40.0, drafted=20, score_ms=50.0, passes=5) == pytest.approx(0.2)
    assert theory.measured_c(0.0, 0, 50.0, 5) is None


@pytest.mark.parametrize(
    "call",
    [
        lambda: theory.expected_tokens_per_round(1.5, 2),
        lambda: theory.expected_tokens_per_round(-0.1, 2),
        lambda: theory.expected_tokens_per_round(float("nan"), 2),
        lambda: theory.expected_tokens_per_round(0.5, -1),
        lambda: theory.expected_tokens_per_round(0.5, 2.5),
        lambda: theory.speedup(0.5, 2, -0.1),
        lambda: theory.speedup(0.5, 0, 0.1, verify_cost=0.0),
        lambda: theory.best_gamma(0.5, 0.1, max_gamma=0),
        lambda: theory.alpha_from_rounds([(2, 3)]),
    ],
)
def test_bad_inputs_raise(call):
    with pytest.raises(ValueError):
        call()
