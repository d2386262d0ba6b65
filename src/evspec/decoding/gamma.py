"""γ policies: how many tokens to draft in the next round.

Notation (Leviathan et al. 2023, ``evspec.bench.theory``): α is the per-token acceptance
(the probability that a draft is accepted given that every earlier draft of the round
was), γ the drafts per round, ``c`` the cost of one drafted token over one target pass,
``v`` the cost of the verification pass over a one-token step.  A round is expected to
yield τ(α, γ) = 1 + α + … + α^γ tokens at cost γ·c + v, so the speedup is τ / (γ·c + v).

* :class:`FixedGamma`: the same γ every round (the engine's ``gamma=``).
* :class:`DynamicGamma`: a Beta posterior over α from the rounds seen so far (a sliding
  window of them), and each round the γ that maximises the *posterior expected* speedup
  E[τ(α, γ)] / (γ·c + v).  E[τ] is exact under a Beta(a, b) posterior, because
  E[α^i] = Π_{j<i} (a + j) / (a + b + j).  With ``min_gamma=0`` it may stop drafting when
  no γ pays (speedup <= 1), probing with γ = 1 every ``probe_every`` rounds so that the
  estimate can recover.

Counting acceptance (the maximum-likelihood rule of ``theory.alpha_from_rounds``): a round
that drafted k and accepted n is n Bernoulli successes and, when n < k, exactly one
failure (drafts after the first rejection were never tried) -- not k − n failures.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from evspec.decoding.stats import RoundStats


@runtime_checkable
class GammaPolicy(Protocol):
    """Chooses γ before each round and learns from each finished round.

    The engine calls ``next_gamma(history)`` with the request's rounds so far (a policy may
    also keep its own state across requests) and ``observe(round)`` after each round.  The
    engine may draft fewer than the γ returned (token budget, context room, a drafter that
    finds fewer tokens); ``round.drafted`` is what was really drafted.
    """

    max_gamma: int

    def next_gamma(self, history: Sequence[RoundStats]) -> int: ...

    def observe(self, round: RoundStats) -> None: ...


@dataclass
class FixedGamma:
    """γ = ``gamma`` every round (what ``generate(gamma=...)`` does)."""

    gamma: int = 4

    def __post_init__(self) -> None:
        if isinstance(self.gamma, bool) or not isinstance(self.gamma, int) or self.gamma < 1:
            raise ValueError(f"FixedGamma.gamma must be an integer >= 1, got {self.gamma!r}")

    @property
    def max_gamma(self) -> int:
        return self.gamma

    def next_gamma(self, history: Sequence[RoundStats]) -> int:
        return self.gamma

    def observe(self, round: RoundStats) -> None:
        pass


def expected_tau(a: float, b: float, gamma: int) -> float:
    """E[τ(α, γ)] = Σ_{i=0..γ} E[α^i] for α ~ Beta(a, b) (a, b > 0)."""
    total, moment = 1.0, 1.0
    for j in range(gamma):
        moment *= (a + j) / (a + b + j)  # E[α^(j+1)]
        total += moment
    return total


@dataclass
class DynamicGamma:
    """γ per round from the running acceptance estimate (see the module docstring).

    ``c``: drafted-token cost over a target pass (measure it: ``theory.measured_c``);
    with ``measure_c=True`` it is re-estimated from the observed rounds' timings
    (draft ms per drafted token / score ms per round) once ``window`` rounds exist, and
    ``c`` is only the starting value.  ``prior_alpha`` and ``prior_strength`` set the
    Beta prior (mean ``prior_alpha``, worth ``prior_strength`` trials); ``window``
    keeps the last rounds only, so the estimate follows changes (e.g. a new request type).
    ``verify_cost`` is v.  The state persists across requests (call :meth:`reset` to
    forget).
    """

    c: float = 0.1
    max_gamma: int = 8
    prior_alpha: float = 0.5
    window: int = 32
    prior_strength: float = 2.0
    verify_cost: float = 1.0
    min_gamma: int = 1
    probe_every: int = 8
    measure_c: bool = False
    _rounds: deque = field(init=False, repr=False)
    _idle: int = field(init=False, repr=False, default=0)
    _c_now: float = field(init=False, repr=False, default=0.0)

    def __post_init__(self) -> None:
        if not (isinstance(self.c, int | float) and 0.0 <= float(self.c) < float("inf")):
            raise ValueError(f"DynamicGamma.c must be a finite number >= 0 (draft cost per token / target pass), got {self.c!r}")
        if isinstance(self.max_gamma, bool) or not isinstance(self.max_gamma, int) or self.max_gamma < 1:
            raise ValueError(f"DynamicGamma.max_gamma must be an integer >= 1, got {self.max_gamma!r}")
        if not 0.0 < self.prior_alpha < 1.0:
            raise ValueError(f"DynamicGamma.prior_alpha must be in (0, 1) (a guess of α), got {self.prior_alpha!r}")
        if not self.prior_strength > 0:
            raise ValueError(f"DynamicGamma.prior_strength must be > 0 (pseudo-trials), got {self.prior_strength!r}")
        if isinstance(self.window, bool) or not isinstance(self.window, int) or self.window < 1:
            raise ValueError(f"DynamicGamma.window must be an integer >= 1 (rounds remembered), got {self.window!r}")
        if not self.verify_cost > 0:
            raise ValueError(f"DynamicGamma.verify_cost must be > 0, got {self.verify_cost!r}")
        if self.min_gamma not in (0, 1):
            raise ValueError(f"DynamicGamma.min_gamma must be 0 (may stop drafting) or 1, got {self.min_gamma!r}")
        if self.probe_every < 1:
            raise ValueError(f"DynamicGamma.probe_every must be >= 1, got {self.probe_every!r}")
        self.reset()

    def reset(self) -> None:
        """Forget every observed round (back to the prior and the given ``c``)."""
        self._rounds = deque(maxlen=self.window)
        self._idle = 0
        self._c_now = float(self.c)

    # -- the estimate ----------------------------------------------------------------------
    def posterior(self) -> tuple[float, float]:
        """Beta(a, b) over α: prior pseudo-counts plus the window's successes / failures."""
        a = self.prior_alpha * self.prior_strength
        b = (1.0 - self.prior_alpha) * self.prior_strength
        for r in self._rounds:
            a += r.accepted
            b += 1 if r.accepted < r.drafted else 0
        return a, b

    @property
    def alpha(self) -> float:
        """Posterior mean of α."""
        a, b = self.posterior()
        return a / (a + b)

    @property
    def cost(self) -> float:
        """The c in use (measured when ``measure_c`` and enough rounds were seen)."""
        return self._c_now

    def expected_speedup(self, gamma: int) -> float:
        """Posterior expected τ over the round's cost, for drafting ``gamma`` tokens."""
        a, b = self.posterior()
        return expected_tau(a, b, gamma) / (gamma * self._c_now + self.verify_cost)

    # -- GammaPolicy -------------------------------------------------------------------------
    def next_gamma(self, history: Sequence[RoundStats]) -> int:
        best, best_s = 1, -1.0
        for g in range(1, self.max_gamma + 1):
            s = self.expected_speedup(g)
            if s > best_s * (1.0 + 1e-12):
                best, best_s = g, s
        if self.min_gamma == 0 and best_s <= 1.0:
            # drafting does not pay: decode with the target alone, probing now and then
            self._idle += 1
            if self._idle % self.probe_every:
                return 0
            return 1
        self._idle = 0
        return best

    def observe(self, round: RoundStats) -> None:
        if round.drafted <= 0:
            return  # nothing was tried: no evidence about α
        if not 0 <= round.accepted <= round.drafted:
            raise ValueError(f"a round accepted {round.accepted} of {round.drafted} drafts")
        self._rounds.append(round)
        if self.measure_c and len(self._rounds) == self.window:
            drafted = sum(r.drafted for r in self._rounds)
            draft_ms = sum(r.draft_ms for r in self._rounds)
            score_ms = sum(r.score_ms for r in self._rounds)
            if drafted and score_ms > 0:
                self._c_now = (draft_ms / drafted) / (score_ms / len(self._rounds))
