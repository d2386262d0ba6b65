"""Greedy speculative decoding is token-identical to target-only greedy decoding."""

from __future__ import annotations

import random

import pytest
import torch

from engine_doubles import EOS, TinyTextLM
from evspec.decoding.drafters import ModelDrafter, PromptLookupDrafter
from evspec.decoding.engine import generate
from evspec.decoding.protocols import Draft
from evspec.models.request import Request


class OracleDrafter:
    """Proposes the target's own greedy continuation, corrupted with probability 1 - a."""

    name = "oracle"

    def __init__(self, reference: list[int], a: float, vocab: int, seed: int):
        self.ref, self.a, self.vocab = reference, a, vocab
        self.rng = random.Random(seed)
        self.pos = 0
        self.proposed: list[int] = []

    def begin(self, request, target, state, first_token):
        assert first_token == self.ref[0]
        self.pos = 1

    def propose(self, k, temperature, generator):
        out = []
        for i in range(k):
            j = self.pos + i
            tok = self.ref[j] if j < len(self.ref) else self.rng.randrange(self.vocab)
            if self.rng.random() > self.a:
                tok = (tok + 1 + self.rng.randrange(self.vocab - 1)) % self.vocab
            out.append(tok)
        self.proposed = out
        return Draft(tokens=torch.tensor(out, dtype=torch.long))

    def accept(self, n, t):
        assert 0 <= n <= len(self.proposed)
        self.pos += n + 1

    def end(self):
        pass


def _reference_greedy(model: TinyTextLM, request: Request, max_new: int) -> list[int]:
    """Cache-free greedy decoding: an independent reference for the engine."""
    ids = model.prompt_ids(request).tolist()
    out: list[int] = []
    for _ in range(max_new):
        tok = int(torch.argmax(model.full_logits(ids + out)))
        out.append(tok)
        if tok == EOS:
            break
    return out


def test_target_only_matches_cache_free_reference(request_factory):
    for seed in range(4):
        model = TinyTextLM(seed=seed)
        req = request_factory("abc" * (seed + 1))
        res = generate(model, req, None, max_new_tokens=12)
        assert res.tokens == _reference_greedy(model, req, 12)
        assert res.stats.tau == 1.0 and res.stats.drafted == 0


@pytest.mark.parametrize("block", range(4))
def test_greedy_sd_identical_randomized(block):
    """50 randomized cases per block (200 in all): random tiny models, gamma 1-8, prompt
    lengths, early EOS, token limit reached mid-round; every drafter kind."""
    rng = random.Random(1000 + block)
    targets = [TinyTextLM(seed=s, eos_bias=b) for s, b in ((block, 0.0), (block + 10, 3.0))]
    drafter_models = [TinyTextLM(seed=block + 20), TinyTextLM(seed=block + 30, eos_bias=3.0)]
    kinds = ("model", "self", "prompt-lookup", "oracle", "oracle-perfect")
    for case in range(50):
        target = targets[case % 2]
        q = "".join(rng.choice("abcdefgh ") for _ in range(rng.randint(1, 40)))
        req = Request(question=q)
        gamma = rng.randint(1, 8)
        max_new = rng.randint(1, 30)
        ref = generate(target, req, None, max_new_tokens=max_new)
        kind = kinds[case % len(kinds)]
        if kind == "model":
            drafter = ModelDrafter(drafter_models[case % 2], name="tiny")
        elif kind == "self":
            drafter = ModelDrafter(target, name="self")
        elif kind == "prompt-lookup":
            drafter = PromptLookupDrafter(max_ngram=rng.randint(1, 3))
        else:
            a = 1.0 if kind == "oracle-perfect" else rng.random()
            drafter = OracleDrafter(ref.tokens, a, target.vocab_size, seed=case)
        res = generate(target, req, drafter, gamma=gamma, max_new_tokens=max_new)
        ctx = f"case {case} kind={kind} gamma={gamma} max_new={max_new}"
        assert res.tokens == ref.tokens, ctx
        assert len(res.tokens) <= max_new, ctx
        assert res.stats.stop_reason == ref.stats.stop_reason, ctx
        if kind in ("self", "oracle-perfect") and res.stats.drafted and EOS not in res.tokens:
            assert res.stats.alpha == 1.0, ctx


def test_eos_accepted_inside_a_draft_ends_the_answer(request_factory):
    target = TinyTextLM(seed=3, eos_bias=4.0)
    for q in ("a", "bb", "cde", "hello there"):
        req = request_factory(q)
        ref = generate(target, req, None, max_new_tokens=40)
        res = generate(target, req, ModelDrafter(target, name="self"), gamma=8, max_new_tokens=40)
        assert res.tokens == ref.tokens
        if EOS in ref.tokens:
            assert res.tokens[-1] == EOS and res.stats.stop_reason == "eos"


def test_self_drafting_accepts_everything_and_counts_rounds(request_factory):
    target = TinyTextLM(seed=5)
    res = generate(target, request_factory("xyz"), ModelDrafter(target, name="self"), gamma=4, max_new_tokens=21)
    if EOS not in res.tokens:
        # 1 first token + 4 rounds of (4 drafts + 1 target token) = 21
        assert len(res.tokens) == 21
        assert [r.accepted for r in res.stats.rounds] == [4, 4, 4, 4]
        assert res.stats.tau == 5.0


def test_context_limit_stops_cleanly(request_factory):
    target = TinyTextLM(seed=1, max_context=24)
    req = request_factory("q" * 10)  # 11 prompt tokens
    ref = generate(target, req, None, max_new_tokens=100)
    res = generate(target, req, ModelDrafter(target, name="self"), gamma=6, max_new_tokens=100)
    assert res.tokens == ref.tokens
    assert ref.stats.stop_reason in ("context", "eos")


def test_forced_reference_drives_acceptance(request_factory):
    """Acceptance-controlled timing mode: the reference replaces the argmax, so an oracle
    that is right with probability a is accepted at about that rate, and the output is the
    reference even where the model itself would have chosen otherwise."""
    target = TinyTextLM(seed=2)
    reference = [5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20] * 4  # not the model's
    drafter = OracleDrafter(reference, 0.8, target.vocab_size, seed=1)
    res = generate(target, request_factory("abc"), drafter, gamma=4, max_new_tokens=64,
                   stop_at_eos=False, forced_reference=reference)
    assert res.tokens == reference
    assert 0.4 < res.stats.alpha < 0.95
    with pytest.raises(ValueError):
        generate(target, request_factory("abc"), None, temperature=1.0, forced_reference=reference)
