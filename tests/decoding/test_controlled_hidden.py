"""The acceptance-controlled wrapper passes the target's hidden states through to a drafter
that needs them (the event and target heads), so heads run in controlled benchmarks too."""

from __future__ import annotations

import torch

from engine_doubles import TinyTextLM
from evspec.decoding.drafters import ModelDrafter
from evspec.decoding.drafters.controlled import ControlledDrafter
from evspec.decoding.engine import generate
from evspec.models.request import Request


class HiddenHungry(ModelDrafter):
    """A model drafter that, like the heads, asks for the target's hidden states and checks
    their shapes."""

    needs_target_hidden = True

    def __init__(self, model: TinyTextLM) -> None:
        super().__init__(model, name="hungry")
        self.seen: list[int] = []

    def accept(self, n_accepted: int, next_token: int, target_hidden: torch.Tensor | None = None) -> None:
        assert target_hidden is not None and target_hidden.shape[0] == n_accepted + 1
        self.seen.append(int(target_hidden.shape[0]))
        super().accept(n_accepted, next_token)


def test_controlled_wrapper_forwards_hidden_states() -> None:
    target, other = TinyTextLM(seed=3, vocab=40), TinyTextLM(seed=4, vocab=40)
    req = Request(question="hidden")
    reference = generate(target, req, None, max_new_tokens=20, stop_at_eos=False).tokens
    inner = HiddenHungry(other)
    drafter = ControlledDrafter(inner, target, alpha=0.7, seed=1)
    assert drafter.needs_target_hidden
    drafter.set_reference(reference)
    res = generate(target, req, drafter, gamma=3, max_new_tokens=20, stop_at_eos=False,
                   forced_reference=reference)
    assert res.tokens == reference
    assert inner.seen and sum(inner.seen) == sum(r.accepted + 1 for r in res.stats.rounds[: len(inner.seen)])
    plain = ControlledDrafter(ModelDrafter(other), target, alpha=0.7, seed=1)
    assert not plain.needs_target_hidden
