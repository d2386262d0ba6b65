"""The drafters' public ``rewind(n)``: what it undoes, what it refuses, and that the
pipelined schedule and the cascade go through it (not through private attributes)."""

from __future__ import annotations

import pytest
import torch

from engine_doubles import FixedTarget, TinyTextLM
from evspec.decoding.drafters import ModelDrafter, PromptLookupDrafter
from evspec.decoding.drafters.cascade import can_rewind, rewind
from evspec.decoding.drafters.controlled import ControlledDrafter
from evspec.decoding.engine import generate
from evspec.decoding.pipeline import generate_pipelined, pipeline_support
from evspec.decoding.protocols import Draft
from evspec.models.request import Request

REQ = Request(question="abcab xy")


def test_model_drafter_rewind_equals_a_fresh_drafter_on_the_confirmed_tokens():
    lm = TinyTextLM(seed=3)
    a = ModelDrafter(lm)
    a.begin(REQ, lm, None, 7)
    d = a.propose(3, 0.0, None).tokens.tolist()
    a.accept(1, 9)  # committed: 7, d_1, 9  (KV: prompt + 7 + d_1; pending [9])
    assert a.committed == 3
    a.rewind(2)  # forget 9 and d_1: the KV is rolled back by one, pending emptied
    assert a.committed == 1
    a.accept(0, 4)  # committed: 7, 4
    b = ModelDrafter(lm)
    b.begin(REQ, lm, None, 7)
    b.propose(0, 0.0, None)
    b.accept(0, 4)  # committed: 7, 4 without ever drafting
    assert a.propose(4, 0.0, None).tokens.tolist() == b.propose(4, 0.0, None).tokens.tolist()
    assert len(d) == 3


def test_model_drafter_rewind_refuses_bad_calls():
    lm = TinyTextLM(seed=4)
    dr = ModelDrafter(lm, name="tiny")
    with pytest.raises(RuntimeError, match="before begin"):
        dr.rewind(1)
    dr.begin(REQ, lm, None, 5)
    with pytest.raises(ValueError, match="only 1 were committed"):
        dr.rewind(2)  # the prompt is not the drafter's to forget
    with pytest.raises(ValueError, match=">= 0"):
        dr.rewind(-1)
    dr.propose(2, 0.0, None)
    with pytest.raises(RuntimeError, match="inside a round"):
        dr.rewind(1)
    dr.accept(2, 6)
    dr.rewind(0)  # a no-op
    assert dr.committed == 4


def test_prompt_lookup_rewind_keeps_the_prompt():
    target = FixedTarget(torch.full((24,), 1 / 24))
    pl = PromptLookupDrafter(max_ngram=2)
    state = target.prefill(REQ)
    state.prompt_ids = torch.tensor([1, 3, 4, 5, 3, 4])
    pl.begin(REQ, target, state, 5)
    assert pl.propose(2, 0.0, None).tokens.tolist() == [3, 4]  # after "4 5": "3 4"
    pl.accept(2, 8)  # context: prompt + 5, 3, 4, 8
    pl.rewind(3)
    assert pl._context == [1, 3, 4, 5, 3, 4, 5]
    with pytest.raises(ValueError, match="only 1 were accepted"):
        pl.rewind(2)
    pl.rewind(1)  # the first token may go (the pipeline swaps a placeholder this way)
    assert pl._context == [1, 3, 4, 5, 3, 4]


def test_controlled_rewind_moves_the_reference_position():
    lm = TinyTextLM(seed=5)
    ref = [7, 8, 9, 10, 11, 12]
    cd = ControlledDrafter(ModelDrafter(lm), lm, alpha=1.0)
    cd.set_reference(ref)
    cd.begin(REQ, lm, None, 7)
    cd.propose(2, 0.0, None)
    cd.accept(2, 10)  # answer so far 7 8 9 10: the pending token is answer index 3
    assert cd.propose(1, 0.0, None).tokens.tolist() == [11]
    cd.accept(0, 11)  # index 4
    cd.rewind(3)  # back to index 1 (answer 7 8)
    cd.accept(0, 9)  # index 2
    assert cd.inner.committed == 3  # the inner drafter is kept in step: 3 answer tokens
    assert cd.propose(2, 0.0, None).tokens.tolist() == [10, 11]  # α = 1: the reference


class _Opaque:
    """A drafter without ``rewind``."""

    name = "opaque"

    def begin(self, *a):
        pass

    def propose(self, k, t, g):
        return Draft(tokens=torch.zeros(0, dtype=torch.long))

    def accept(self, n, t):
        pass

    def end(self):
        pass


def test_controlled_around_an_opaque_drafter_cannot_rewind():
    lm = TinyTextLM(seed=6)
    cd = ControlledDrafter(_Opaque(), lm, alpha=0.5)
    assert not cd.rewindable and not can_rewind(cd)
    assert "cannot rewind" in pipeline_support(cd)
    cd.set_reference([1, 2, 3])
    cd.begin(REQ, lm, None, 1)
    with pytest.raises(TypeError, match="cannot rewind"):
        cd.rewind(1)
    with pytest.raises(TypeError, match="cannot rewind"):
        rewind(_Opaque(), 1)
    assert can_rewind(ControlledDrafter(PromptLookupDrafter(), lm, alpha=0.5))


def test_pipeline_and_cascade_rewind_through_the_public_method(monkeypatch):
    calls: list[tuple[str, int]] = []
    original = ModelDrafter.rewind

    def spy(self, n):
        calls.append((self.name, n))
        original(self, n)

    monkeypatch.setattr(ModelDrafter, "rewind", spy)
    target, other = TinyTextLM(seed=0), TinyTextLM(seed=21)
    req = Request(question="abcab")
    ref = generate(target, req, None, max_new_tokens=20).tokens
    res = generate_pipelined(target, req, ModelDrafter(other, name="other"), gamma=3, max_new_tokens=20)
    assert res.tokens == ref
    assert res.stats.predraft_discarded > 0  # rejections happened ...
    assert any(name == "other" for name, _ in calls)  # ... and were undone by rewind(n)

    from evspec.decoding.drafters.cascade import CascadeDrafter

    calls.clear()
    middle = TinyTextLM(seed=22)
    for seed in range(40, 48):  # a rejection inside an earlier inner round needs a rewind
        casc = CascadeDrafter(ModelDrafter(TinyTextLM(seed=seed), name="cheap"), middle, inner_gamma=1)
        assert generate(target, req, casc, gamma=4, max_new_tokens=20).tokens == ref
    assert any(name == "cheap" for name, _ in calls)
