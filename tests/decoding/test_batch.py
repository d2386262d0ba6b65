"""Batched speculative decoding equals unbatched decoding request by request."""

from __future__ import annotations

import random

import pytest
import torch

from engine_doubles import TinyTextLM
from evspec.decoding import batch as batch_mod
from evspec.decoding.batch import generate_batch
from evspec.decoding.drafters import ModelDrafter, PromptLookupDrafter
from evspec.decoding.engine import generate
from evspec.models.request import Request

TARGET = TinyTextLM(seed=0)
EARLY_EOS = TinyTextLM(seed=0, eos_bias=2.0)  # ragged stops: some rows end after 1-3 tokens
DRAFT = TinyTextLM(seed=1)


def _drafter(kind: str, target=TARGET):
    if kind == "model":
        return ModelDrafter(DRAFT, name="tiny")
    if kind == "self":
        return ModelDrafter(target, name="self")
    if kind == "prompt-lookup":
        return PromptLookupDrafter()
    return None


@pytest.mark.parametrize("gamma,early", [(1, False), (3, True), (6, False)])
def test_batched_greedy_equals_unbatched(gamma, early):
    target = EARLY_EOS if early else TARGET
    rng = random.Random(gamma)
    questions = ["".join(rng.choice("abcdef ") for _ in range(rng.randint(1, 30))) for _ in range(6)]
    kinds = ["model", "self", "prompt-lookup", "none", "model", "prompt-lookup"]
    reqs = [Request(question=q) for q in questions]
    batched = generate_batch(target, reqs, lambda i, r: _drafter(kinds[i], target), gamma=gamma, max_new_tokens=24)
    if not early:
        assert sum(len(b.tokens) for b in batched) > 60  # long enough to mean something
    for i, req in enumerate(reqs):
        single = generate(target, req, _drafter(kinds[i], target), gamma=gamma, max_new_tokens=24)
        assert batched[i].tokens == single.tokens, (i, kinds[i])
        assert batched[i].stats.stop_reason == single.stats.stop_reason
        assert [(r.drafted, r.accepted) for r in batched[i].stats.rounds] == [
            (r.drafted, r.accepted) for r in single.stats.rounds
        ]


def test_batched_sampling_equals_unbatched_with_the_same_seeds():
    target, draft = TinyTextLM(seed=2, vocab=40), TinyTextLM(seed=3, vocab=40)
    with torch.no_grad():  # flatter heads: genuinely random samples
        for m in (target, draft):
            m.lm_head.weight.div_(4.0)
    reqs = [Request(question=q) for q in ("one", "two two", "three three three", "4")]
    seeds = [11, 12, 13, 14]
    batched = generate_batch(target, reqs, lambda i, r: ModelDrafter(draft), gamma=3, max_new_tokens=20,
                             temperature=1.0, seeds=seeds)
    for req, seed, res in zip(reqs, seeds, batched):
        single = generate(target, req, ModelDrafter(draft), gamma=3, max_new_tokens=20, temperature=1.0, seed=seed)
        assert res.tokens == single.tokens


def test_compaction_keeps_outputs_exact(monkeypatch):
    """Force compaction every round (threshold 1.0): outputs still equal unbatched ones."""
    calls = []
    orig = batch_mod._BatchKV._compact

    def spy(self):
        calls.append(self.valid.shape)
        orig(self)

    monkeypatch.setattr(batch_mod._BatchKV, "_compact", spy)
    monkeypatch.setattr(batch_mod._BatchKV, "tidy", lambda self: (self._compact()))
    reqs = [Request(question=q) for q in ("a b c", "longer question here", "x")]
    batched = generate_batch(TARGET, reqs, lambda i, r: ModelDrafter(DRAFT), gamma=4, max_new_tokens=20)
    assert calls
    for req, res in zip(reqs, batched):
        assert res.tokens == generate(TARGET, req, ModelDrafter(DRAFT), gamma=4, max_new_tokens=20).tokens


def test_forced_references_and_bad_arguments():
    reqs = [Request(question="p"), Request(question="qq")]
    refs = [[5, 6, 7, 8, 9, 10], [7, 7, 7, 7]]
    out = generate_batch(TARGET, reqs, lambda i, r: PromptLookupDrafter(), gamma=3, max_new_tokens=10,
                         stop_at_eos=False, forced_references=refs)
    assert [o.tokens for o in out] == refs
    with pytest.raises(ValueError):
        generate_batch(TARGET, reqs, None, seeds=[1])
    with pytest.raises(ValueError):
        generate_batch(TARGET, reqs, None, gamma=0)
    assert generate_batch(TARGET, [], None) == []
