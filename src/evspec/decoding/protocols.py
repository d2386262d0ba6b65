"""The two small protocols through which ``decoding`` knows models.

Notation follows Leviathan et al. (2023): the target's distribution is ``p``, the
drafter's ``q``, a round proposes ``gamma`` tokens, ``alpha`` is the per-token acceptance
rate and ``tau`` the number of tokens produced per target pass.

Token bookkeeping (the same for target and drafters).  After prefill the engine samples
the first answer token from the target's last-position logits; from then on there is
always exactly one *pending* token: generated, emitted, but not yet fed through the
target.  A round scores ``[pending, d_1 .. d_k]`` in one target pass, which yields
``k + 1`` next-token distributions.  After accepting ``n`` drafts and taking one token
``t`` from the target, the target KV holds ``prefix + pending + d_1..d_n`` and ``t`` is
the new pending token.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch

from evspec.models.request import Request
from evspec.models.state import ScoreOutput, TargetState

__all__ = ["Draft", "Drafter", "ScoreOutput", "Target", "TargetState"]


@runtime_checkable
class Target(Protocol):
    """A verifier model (Video-LLaVA, or anything with the same three calls)."""

    vocab_size: int  # size of the logits' last dimension
    eos_token_id: int
    max_context: int

    def prefill(self, request: Request, *, return_hidden: bool = False) -> TargetState: ...

    def score(
        self, state: TargetState, tokens: torch.Tensor, *, return_hidden: bool = False
    ) -> ScoreOutput:
        """Feed ``tokens`` ``[k + 1]`` (pending + k drafts) and append them to the KV."""
        ...

    def rollback(self, state: TargetState, n: int) -> None:
        """Drop the last ``n`` positions from the KV (``state.length -= n``)."""
        ...

    def decode_text(self, ids: list[int]) -> str: ...


@dataclass
class Draft:
    """A drafter's proposal for one round.

    ``tokens``: ``[k]`` int64.  ``probs``: ``[k, V]`` float32, the drafter's distribution
    ``q`` that each token was sampled from, or ``None`` for a deterministic drafter (q is
    then one-hot at the proposed token).
    """

    tokens: torch.Tensor
    probs: torch.Tensor | None = None


@runtime_checkable
class Drafter(Protocol):
    """A draft strategy.  Invariant after every ``accept``: the drafter's own state holds
    exactly the accepted prefix plus the target's token (rejected drafts rolled back).

    A drafter that sets ``needs_target_hidden = True`` (EAGLE-style heads) finds the
    target's last hidden state of the prompt in ``begin``'s ``state.last_hidden`` and
    receives ``accept(n, t, target_hidden=[n + 1, H])``: the target's hidden states at the
    pending token and the n accepted drafts (the positions that predicted them and ``t``).
    """

    name: str

    def begin(self, request: Request, target: Target, state: TargetState, first_token: int) -> None:
        """Start a request: prefill the drafter's own model; ``first_token`` is pending."""
        ...

    def propose(self, k: int, temperature: float, generator: torch.Generator | None) -> Draft:
        """Propose ``k`` tokens continuing the accepted sequence."""
        ...

    def accept(self, n_accepted: int, next_token: int) -> None:
        """Keep the first ``n_accepted`` proposals, then append the target's ``next_token``."""
        ...

    def end(self) -> None:
        """Free per-request state."""
        ...
