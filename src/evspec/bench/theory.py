"""The cost model of speculative decoding (Leviathan et al. 2023, §3.1 and §3.4).

Notation follows the paper: ``alpha`` (α) is the probability that the target accepts a
drafted token given that every earlier token of the round was accepted (assumed the same
at every position), ``gamma`` (γ) the number of tokens drafted per round, ``c`` the cost of
drafting one token divided by the cost of one target pass, ``tau`` (τ) the expected number
of tokens a round produces (accepted drafts plus the target's own token).

* τ(α, γ) = (1 − α^(γ+1)) / (1 − α), and τ = γ + 1 at α = 1.
* A round costs γ·c + v target passes, where ``v`` is the cost of the verification pass
  relative to a one-token target step (Leviathan assume v = 1).  Speedup S = τ / (γ·c + v).
* Speculation only pays when α > c (for γ = 1 and v = 1: S = (1 + α) / (1 + c)).

Measured figures come in through :func:`alpha_from_rounds` (the maximum-likelihood α of
this model, which is *not* accepted / drafted) and :func:`measured_c`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable


def _check_alpha(alpha: float) -> float:
    if not isinstance(alpha, int | float) or math.isnan(alpha) or not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be a probability in [0, 1], got {alpha!r}")
    return float(alpha)


def _check_gamma(gamma: int) -> int:
    if isinstance(gamma, bool) or not isinstance(gamma, int) or gamma < 0:
        raise ValueError(f"gamma must be an integer >= 0 (tokens drafted per round), got {gamma!r}")
    return gamma


def _check_cost(name: str, value: float) -> float:
    if not isinstance(value, int | float) or math.isnan(value) or value < 0 or math.isinf(value):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return float(value)


def expected_tokens_per_round(alpha: float, gamma: int) -> float:
    """τ(α, γ): expected tokens produced by one round (Leviathan et al., eq. 1).

    >>> expected_tokens_per_round(0.5, 2)   # 1 + 0.5 + 0.25
    1.75
    """
    a = _check_alpha(alpha)
    g = _check_gamma(gamma)
    if a == 1.0:
        return float(g + 1)
    # Geometric sum 1 + α + … + α^γ, written in closed form.
    return (1.0 - a ** (g + 1)) / (1.0 - a)


def speedup(alpha: float, gamma: int, c: float, verify_cost: float = 1.0) -> float:
    """Expected walltime speedup S = τ(α, γ) / (γ·c + v) over target-only decoding.

    ``verify_cost`` (v) is the cost of the target pass that scores γ + 1 tokens relative to
    a one-token decoding step; 1 is the paper's assumption (true when decoding is memory-
    or launch-bound).  Prefill is not modelled: this is the decode-phase speedup.
    """
    c = _check_cost("c (draft cost per token / target cost per pass)", c)
    v = _check_cost("verify_cost", verify_cost)
    denom = _check_gamma(gamma) * c + v
    if denom == 0.0:
        raise ValueError("gamma * c + verify_cost is 0: a round cannot cost nothing")
    return expected_tokens_per_round(alpha, gamma) / denom


def speedup_for_rounds(
    alpha: float, drafted_per_round: Iterable[int], c: float, verify_cost: float = 1.0
) -> float:
    """:func:`speedup` when rounds draft varying numbers of tokens k_r (drafters that may
    propose fewer than γ, such as prompt lookup, and the shortened last rounds):
    S = mean_r τ(α, k_r) / (mean_r(k_r)·c + v).  Equals ``speedup(alpha, γ, c, v)`` when
    every k_r = γ.
    """
    ks = [_check_gamma(int(k)) for k in drafted_per_round]
    if not ks:
        raise ValueError("speedup_for_rounds needs at least one round")
    c = _check_cost("c (draft cost per token / target cost per pass)", c)
    v = _check_cost("verify_cost", verify_cost)
    tau = sum(expected_tokens_per_round(alpha, k) for k in ks) / len(ks)
    denom = sum(ks) / len(ks) * c + v
    if denom == 0.0:
        raise ValueError("mean(k) * c + verify_cost is 0: a round cannot cost nothing")
    return tau / denom


def best_gamma(alpha: float, c: float, max_gamma: int = 16, verify_cost: float = 1.0) -> int:
    """The γ in ``1..max_gamma`` with the largest :func:`speedup` (smallest γ on ties).

    When even the best γ gives a speedup <= 1, speculation does not pay for this (α, c):
    check ``speedup(alpha, best, c) > 1`` before drafting.
    """
    if _check_gamma(max_gamma) < 1:
        raise ValueError(f"max_gamma must be >= 1, got {max_gamma}")
    best, best_s = 1, -1.0
    for g in range(1, max_gamma + 1):
        s = speedup(alpha, g, c, verify_cost)
        if s > best_s * (1.0 + 1e-12):
            best, best_s = g, s
    return best


def alpha_from_rounds(rounds: Iterable[tuple[int, int]]) -> float | None:
    """Maximum-likelihood α of the cost model from ``(drafted, accepted)`` per round.

    Each round is a run of Bernoulli(α) trials stopped at the first rejection (or when the
    k drafts run out): it contributes ``accepted`` successes and one failure when
    ``accepted < drafted``.  α̂ = successes / trials.  This is the α that makes τ(α, γ)
    agree with the measured τ; accepted / drafted underestimates it, because drafts after a
    rejection count as drafted but are never tried.  ``None`` when nothing was drafted.
    """
    successes = trials = 0
    for drafted, accepted in rounds:
        if not 0 <= accepted <= drafted:
            raise ValueError(f"a round accepted {accepted} of {drafted} drafts")
        successes += accepted
        trials += accepted + (1 if accepted < drafted else 0)
    return successes / trials if trials else None


def measured_c(draft_ms: float, drafted: int, score_ms: float, passes: int) -> float | None:
    """c from a run: (draft ms per drafted token) / (target score ms per pass).

    ``None`` when nothing was drafted or no pass was timed.
    """
    if drafted <= 0 or passes <= 0 or score_ms <= 0:
        return None
    return (draft_ms / drafted) / (score_ms / passes)
