"""Acceptance-controlled drafting: real drafter compute, chosen acceptance (DESIGN.md §5).

With random 7B-shaped weights, timing is real but acceptance is meaningless.  This wrapper
runs the inner drafter's real ``propose`` (so its cost c is paid exactly), then replaces
each proposed token: with probability α by the target's own greedy continuation at that
position (the *reference*, from a target-only greedy run of the same request), otherwise
by a wrong token (an id different from the reference).  Since the target is greedy and
deterministic, a replaced token is accepted exactly when it equals the reference, so the
per-token acceptance is α by construction and the output stays the reference.  Results
made with it must be labelled "acceptance-controlled".

Synchronisation: the inner drafter is told ``accept(n, t)`` with the engine's n and t, so
its length (hence its compute per round) follows the real run.  Its *content* holds its
own proposals at accepted positions, not the reference tokens; that is harmless because
every proposal it makes is replaced anyway.
"""

from __future__ import annotations

import numpy as np
import torch

from evspec.decoding.protocols import Draft, Drafter, Target
from evspec.models.request import Request
from evspec.models.state import TargetState


class ControlledDrafter:
    """Wrap ``inner`` so that each drafted token is right with probability ``alpha``.

    Call :meth:`set_reference` with the target-only greedy answer of the request before
    each ``generate``.  ``seed`` and the ``stream`` given to ``set_reference`` fix the
    random right/wrong pattern, so a request replays identically.
    """

    def __init__(self, inner: Drafter, target: Target, alpha: float, seed: int = 0) -> None:
        if not isinstance(alpha, int | float) or not 0.0 <= float(alpha) <= 1.0:
            raise ValueError(f"ControlledDrafter alpha must be in [0, 1], got {alpha!r}")
        vocab = int(getattr(target, "vocab_size", 0))
        if vocab < 2:
            raise ValueError(f"ControlledDrafter needs a target vocab_size >= 2, got {vocab}")
        self.inner = inner
        self.alpha = float(alpha)
        self.seed = int(seed)
        self.vocab_size = vocab
        self.name = f"{inner.name}@alpha={self.alpha:g}"
        self._reference: list[int] | None = None
        self._rng = np.random.default_rng([self.seed, 0])
        self._position = 0  # answer index of the pending token (0 = the first token)
        self._proposed = 0

    @property
    def timings(self) -> dict[str, float]:
        """The inner drafter's prefill timings (the engine records them)."""
        return getattr(self.inner, "timings", {})

    @property
    def needs_target_hidden(self) -> bool:
        """As the inner drafter (heads over the target's features need its hidden states)."""
        return bool(getattr(self.inner, "needs_target_hidden", False))

    def prepare_steps(self, max_gamma: int) -> int:
        """As the inner drafter (its fixed-shape steps are what runs); 0 when it has none."""
        ready = getattr(self.inner, "prepare_steps", None)
        return int(ready(max_gamma) or 0) if callable(ready) else 0

    def set_reference(self, tokens: list[int], *, stream: int = 0) -> None:
        """The target's greedy answer for the next request (first token included).

        ``stream`` (e.g. the request's index) selects an independent random pattern.
        """
        ref = [int(t) for t in tokens]
        if not ref:
            raise ValueError("ControlledDrafter.set_reference: the reference answer is empty")
        if any(not 0 <= t < self.vocab_size for t in ref):
            raise ValueError(
                f"ControlledDrafter.set_reference: token ids must be in [0, {self.vocab_size})"
            )
        self._reference = ref
        self._rng = np.random.default_rng([self.seed, int(stream)])

    @property
    def forced_reference(self) -> list[int] | None:
        """The reference the engine verifies against in acceptance-controlled runs."""
        return self._reference

    # -- Drafter protocol --------------------------------------------------------------
    def begin(self, request: Request, target: Target, state: TargetState, first_token: int) -> None:
        if self._reference is None:
            raise RuntimeError(
                "ControlledDrafter.begin before set_reference: run the target-only greedy "
                "baseline first and pass its tokens"
            )
        if first_token != self._reference[0]:
            raise RuntimeError(
                f"ControlledDrafter: the target's first token {first_token} differs from the "
                f"reference's {self._reference[0]}; the reference must be the greedy "
                "target-only answer of this very request"
            )
        self._position = 0
        self._proposed = 0
        self.inner.begin(request, target, state, first_token)

    def _wrong(self, right: int) -> int:
        """A uniformly random id different from ``right``."""
        return (right + 1 + int(self._rng.integers(self.vocab_size - 1))) % self.vocab_size

    def _pattern(self, k: int) -> list[bool]:
        """Which of this round's ``k`` drafts are right: each independently with
        probability α (``bench.replay.ReplayDrafter`` replays recorded rounds instead)."""
        return [bool(self._rng.random() < self.alpha) for _ in range(k)]

    def propose(self, k: int, temperature: float, generator: torch.Generator | None) -> Draft:
        if temperature != 0:
            raise ValueError("ControlledDrafter works with greedy decoding only (temperature 0)")
        assert self._reference is not None
        inner = self.inner.propose(k, temperature, generator)  # the real compute
        proposed = inner.tokens.reshape(-1).tolist()  # [k'] (k' <= k)
        out: list[int] = []
        rights = self._pattern(len(proposed))
        for i, own in enumerate(proposed):
            j = self._position + 1 + i  # answer index this draft would take
            if j >= len(self._reference):  # past the reference's end: keep the inner token
                out.append(int(own))
                continue
            right = self._reference[j]
            out.append(right if rights[i] else self._wrong(right))
        self._proposed = len(out)
        return Draft(tokens=torch.tensor(out, dtype=torch.long), probs=None)

    def accept(self, n_accepted: int, next_token: int, target_hidden: torch.Tensor | None = None) -> None:
        """``target_hidden`` ``[n + 1, H]``: passed on to an inner drafter that needs it."""
        if not 0 <= n_accepted <= self._proposed:
            raise ValueError(f"accepted {n_accepted} of {self._proposed} drafts")
        self._position += n_accepted + 1
        self._proposed = 0
        if self.needs_target_hidden:
            self.inner.accept(n_accepted, next_token, target_hidden=target_hidden)
        else:
            self.inner.accept(n_accepted, next_token)

    @property
    def rewindable(self) -> bool:
        """Whether :meth:`rewind` works: the inner drafter can rewind."""
        from evspec.decoding.drafters.cascade import can_rewind

        return can_rewind(self.inner)

    def rewind(self, n: int) -> None:
        """Forget the last ``n`` accepted tokens: the inner drafter rewinds them and the
        answer position (which reference token each draft is checked against) moves back
        by ``n``.  Call between rounds only, then ``accept(0, token)``.  Raises
        ``TypeError`` when the inner drafter cannot rewind."""
        from evspec.decoding.drafters.cascade import rewind

        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError(f"{self.name}: rewind count must be an integer >= 0, got {n!r}")
        if n == 0:
            return
        if self._proposed:
            raise RuntimeError(f"{self.name}: rewind inside a round (after propose, before accept)")
        if n > self._position + 1:
            raise ValueError(f"{self.name}: cannot rewind {n} tokens, only {self._position + 1} were accepted")
        rewind(self.inner, n)  # TypeError when the inner drafter cannot
        self._position -= n

    def end(self) -> None:
        self._proposed = 0
        self.inner.end()

    def clear_cache(self) -> None:
        """As the inner drafter (a cold-cache benchmark run)."""
        clear = getattr(self.inner, "clear_cache", None)
        if callable(clear):
            clear()
