"""Acceptance-controlled drafting: real inner compute, acceptance set by alpha, output unchanged."""

from __future__ import annotations

import pytest
import torch
from bench_models import TinyLM, random_request

from evspec.bench import theory
from evspec.decoding.drafters import ModelDrafter
from evspec.decoding.drafters.controlled import ControlledDrafter
from evspec.decoding.engine import generate


class CountingDrafter(ModelDrafter):
    """A real model drafter that counts the tokens it was asked to draft."""

    def __init__(self, model):
        super().__init__(model, name="counting")
        self.proposed_total = 0

    def propose(self, k, temperature, generator):
        draft = super().propose(k, temperature, generator)
        self.proposed_total += int(draft.tokens.numel())
        return draft


@pytest.fixture(scope="module")
def models():
    return TinyLM(seed=0), TinyLM(seed=1)


def _run(target, inner, alpha, request, reference, stream=0, gamma=4):
    drafter = ControlledDrafter(inner, target, alpha, seed=3)
    drafter.set_reference(reference, stream=stream)
    return generate(target, request, drafter, gamma=gamma, max_new_tokens=24)


@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0])
def test_output_is_the_reference_and_inner_compute_runs(models, alpha):
    target, draft_model = models
    request = random_request(0)
    reference = generate(target, request, None, max_new_tokens=24).tokens
    inner = CountingDrafter(draft_model)
    res = _run(target, inner, alpha, request, reference)
    assert res.tokens == reference  # lossless, whatever alpha
    s = res.stats
    assert inner.proposed_total == s.drafted > 0  # the real drafter drafted every token
    if alpha == 1.0:
        assert s.alpha == 1.0 and s.tau == pytest.approx((s.drafted + len(s.rounds)) / len(s.rounds))
    if alpha == 0.0:
        assert s.accepted == 0 and s.tau == 1.0


def test_acceptance_follows_alpha(models):
    target, draft_model = models
    rounds = []
    for i in range(6):
        request = random_request(i)
        reference = generate(target, request, None, max_new_tokens=24).tokens
        res = _run(target, ModelDrafter(draft_model, name="m"), 0.6, request, reference, stream=i)
        assert res.tokens == reference
        rounds += [(r.drafted, r.accepted) for r in res.stats.rounds]
    est = theory.alpha_from_rounds(rounds)
    assert 0.4 < est < 0.8  # ~60 Bernoulli trials around 0.6


def test_same_stream_replays_and_streams_differ(models):
    target, draft_model = models
    request = random_request(1)
    reference = generate(target, request, None, max_new_tokens=24).tokens
    runs = [
        [(r.drafted, r.accepted) for r in _run(target, ModelDrafter(draft_model), 0.5, request, reference, s).stats.rounds]
        for s in (0, 0, 1, 2)
    ]
    assert runs[0] == runs[1]
    assert runs[0] != runs[2] or runs[0] != runs[3]


def test_wrong_tokens_are_wrong(models):
    target, draft_model = models
    d = ControlledDrafter(ModelDrafter(draft_model), target, 0.0, seed=0)
    d.set_reference([5] * 30)
    wrong = [d._wrong(5) for _ in range(500)]
    assert 5 not in wrong and min(wrong) >= 0 and max(wrong) < target.vocab_size
    assert len(set(wrong)) > target.vocab_size // 2  # spread over the vocabulary


def test_misuse_is_explained(models):
    target, draft_model = models
    request = random_request(2)
    with pytest.raises(RuntimeError, match="set_reference"):
        generate(target, request, ControlledDrafter(ModelDrafter(draft_model), target, 0.5), max_new_tokens=8)
    d = ControlledDrafter(ModelDrafter(draft_model), target, 0.5)
    reference = generate(target, request, None, max_new_tokens=8).tokens
    d.set_reference([(reference[0] + 1) % target.vocab_size, *reference[1:]])
    with pytest.raises(RuntimeError, match="first token"):
        generate(target, request, d, max_new_tokens=8)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        ControlledDrafter(ModelDrafter(draft_model), target, 1.2)
    with pytest.raises(ValueError, match="empty"):
        d.set_reference([])
    d.set_reference(reference)
    with pytest.raises(ValueError, match="greedy"):
        d.propose(2, 0.7, torch.Generator().manual_seed(0))
