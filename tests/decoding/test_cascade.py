"""Cascade drafting: lossless end to end (greedy identical, sampling distribution), both
levels re-synchronised, and the q it hands the target is the middle model's."""

from __future__ import annotations

import random

import pytest
import torch

from markov_doubles import MarkovLM, chi2_pvalue, random_markov
from engine_doubles import EOS, TinyTextLM
from evspec.decoding.drafters import ModelDrafter, PromptLookupDrafter, make_drafter
from evspec.decoding.drafters.base import DrafterError
from evspec.decoding.drafters import cascade as cascade_mod
from evspec.decoding.drafters.cascade import CascadeDrafter, rewind
from evspec.decoding.engine import generate
from evspec.decoding.protocols import Draft
from evspec.models.request import Request


class NoRewind:
    """Wraps a drafter, hiding its class (so the cascade cannot rewind it)."""

    def __init__(self, inner):
        self.inner, self.name = inner, "opaque"

    def begin(self, *a):
        self.inner.begin(*a)

    def propose(self, k, t, g):
        return self.inner.propose(k, t, g)

    def accept(self, n, t):
        self.inner.accept(n, t)

    def end(self):
        self.inner.end()


def _inner(kind: str, seed: int):
    if kind == "prompt-lookup":
        return PromptLookupDrafter(max_ngram=2)
    if kind == "model":
        return ModelDrafter(TinyTextLM(seed=seed + 40), name="tiny")
    return NoRewind(ModelDrafter(TinyTextLM(seed=seed + 50), name="tiny"))


@pytest.mark.parametrize("block", range(2))
def test_greedy_cascade_identical_to_target(block, monkeypatch):
    rewinds = []
    monkeypatch.setattr(cascade_mod, "rewind", lambda d, n: (rewinds.append(n), rewind(d, n)))
    rng = random.Random(77 + block)
    targets = [TinyTextLM(seed=block), TinyTextLM(seed=block + 10, eos_bias=3.0)]
    middles = [TinyTextLM(seed=block + 20), targets[0]]  # a different model; the target itself
    for case in range(16):
        target = targets[case % 2]
        middle = middles[(case // 2) % 2]
        kind = ("prompt-lookup", "model", "opaque")[case % 3]
        req = Request(question="".join(rng.choice("abcd ") for _ in range(rng.randint(2, 20))))
        max_new = rng.randint(2, 30)
        ref = generate(target, req, None, max_new_tokens=max_new)
        casc = CascadeDrafter(_inner(kind, case), middle, inner_gamma=rng.randint(1, 3))
        res = generate(target, req, casc, gamma=rng.randint(1, 6), max_new_tokens=max_new)
        assert res.tokens == ref.tokens, (case, kind)
        if middle is target and EOS not in res.tokens and res.stats.drafted:
            assert res.stats.alpha == 1.0  # the middle's greedy output is the target's
    assert rewinds  # rejections inside earlier inner rounds happened (and were handled)


def test_middle_level_stays_in_sync_with_target_history():
    """After every round the middle model's KV + pending equals prompt + answer so far."""
    target, middle = TinyTextLM(seed=1), TinyTextLM(seed=2)
    casc = CascadeDrafter(ModelDrafter(TinyTextLM(seed=3)), middle, inner_gamma=2)
    req = Request(question="sync me")
    prompt_len = int(middle.prompt_ids(req).numel())
    seen: list[int] = []
    orig_accept = casc.accept

    def checked_accept(n, t):
        orig_accept(n, t)
        assert casc._state.length + len(casc._pending) == prompt_len + len(seen) + n + 1

    casc.accept = checked_accept  # type: ignore[method-assign]

    def on_token(new):
        seen.extend(new)

    ref = generate(target, req, None, max_new_tokens=25)
    res = generate(target, req, casc, gamma=5, max_new_tokens=25, on_token=on_token)
    assert res.tokens == ref.tokens


def _joint_counts(make_drafter_fn, P: torch.Tensor, runs: int, gamma: int) -> torch.Tensor:
    v = P.shape[0]
    counts = torch.zeros(v, v, v)
    target = MarkovLM(P)
    for seed in range(runs):
        res = generate(target, Request(question="x"), make_drafter_fn(), gamma=gamma,
                       max_new_tokens=4, temperature=1.0, seed=seed)
        t = res.tokens
        counts[t[0], t[1], t[2]] += 1
    return counts


def _markov_joint(P: torch.Tensor) -> torch.Tensor:
    """P(t0, t1, t2) = P[0, t0] P[t0, t1] P[t1, t2] for the chain started after token 0."""
    return P[0][:, None, None] * P[:, :, None] * P[None, :, :]


RUNS = 1200
V = 3  # 27 joint cells: enough power (see the liar test), fast enough
P_T = random_markov(V, 0)
P_MID = random_markov(V, 1)
Q_IN = random_markov(V, 2)


@pytest.mark.parametrize("inner_gamma,wrap", [(1, False), (2, True)])
def test_sampled_cascade_has_the_target_distribution(inner_gamma, wrap):
    """chi^2 on the joint law of the first three answer tokens (64 cells) of a Markov
    target, through cascades with multi-round inner levels (rewinds) and without."""

    def make():
        inner = ModelDrafter(MarkovLM(Q_IN), name="q")
        return CascadeDrafter(NoRewind(inner) if wrap else inner, MarkovLM(P_MID), inner_gamma=inner_gamma)

    counts = _joint_counts(make, P_T, runs=RUNS, gamma=3)
    assert chi2_pvalue(counts, _markov_joint(P_T)) > 1e-3


def test_cascade_draft_has_the_middle_distribution():
    """Without the target's correction: the draft itself follows p_mid (so q = p_mid)."""
    casc = CascadeDrafter(ModelDrafter(MarkovLM(Q_IN)), MarkovLM(P_MID), inner_gamma=2)
    counts = torch.zeros(V, V)
    gen = torch.Generator().manual_seed(0)
    for _ in range(RUNS):
        casc.begin(Request(question="x"), MarkovLM(P_T), None, 0)
        d = casc.propose(3, 1.0, gen)
        a, b = d.tokens[:2].tolist()
        counts[a, b] += 1
        # q rows are the middle's conditionals at each emitted position
        assert torch.allclose(d.probs[0], P_MID[0], atol=1e-6)
        assert torch.allclose(d.probs[1], P_MID[a], atol=1e-6)
        casc.end()
    assert chi2_pvalue(counts, P_MID[0][:, None] * P_MID) > 1e-3


def test_the_test_detects_a_wrong_q():
    """Power check: the natural mistake -- handing the target the cheap drafter's q instead
    of the middle's -- is caught with fewer runs than the tests above use.

    (Claiming a deterministic draft, ``probs=None``, would *not* be wrong: accepting x with
    probability p(x) and resampling from norm(max(0, p - onehot_x)) is lossless for any
    proposal law -- it only accepts less than q = p_mid does.)"""

    class Liar(CascadeDrafter):
        def propose(self, k, t, g):
            prev = self._pending[-1]
            d = super().propose(k, t, g)
            before = [prev] + d.tokens.tolist()[:-1]  # the token each draft follows
            return Draft(tokens=d.tokens, probs=torch.stack([Q_IN[x] for x in before]))

    counts = _joint_counts(lambda: Liar(ModelDrafter(MarkovLM(Q_IN)), MarkovLM(P_MID), inner_gamma=2),
                           P_T, runs=800, gamma=3)
    assert chi2_pvalue(counts, _markov_joint(P_T)) < 1e-3


def test_rewind_model_and_prompt_lookup():
    m = TinyTextLM(seed=5)
    d = ModelDrafter(m)
    d.begin(Request(question="ab"), m, None, 7)
    d.propose(3, 0.0, None)
    d.accept(3, 9)  # pending = [d_3, 9]
    length = d._state.length
    rewind(d, 3)  # drops 9, d_3 and one fed token
    assert d._pending == [] and d._state.length == length - 1
    d.accept(0, 4)
    assert d._pending == [4]
    pl = PromptLookupDrafter()
    pl._context = [1, 2, 3, 4]
    rewind(pl, 2)
    assert pl._context == [1, 2]
    with pytest.raises(TypeError):
        rewind(NoRewind(d), 1)


def test_registered_by_name_and_refuses_heads():
    target, middle = TinyTextLM(seed=0), TinyTextLM(seed=1)
    casc = make_drafter("cascade", target=target, draft_model=middle, inner="prompt-lookup", inner_gamma=2)
    assert isinstance(casc, CascadeDrafter) and casc.inner_gamma == 2
    with pytest.raises(DrafterError):
        make_drafter("cascade", target=target)

    class Head(NoRewind):
        needs_target_hidden = True

    with pytest.raises(DrafterError):
        CascadeDrafter(Head(PromptLookupDrafter()), middle)


def test_placeholder_ids_from_the_inner_drafter_are_cut_off():
    """Prompt lookup copies whatever the middle's prompt holds, e.g. a -200 media
    placeholder; the cascade drafts up to it and stays lossless."""

    class Placeholder(PromptLookupDrafter):
        def propose(self, k, t, g):
            self._proposed = [5, -200, 7][:k]
            return Draft(tokens=torch.tensor(self._proposed), probs=None)

    target, middle = TinyTextLM(seed=0), TinyTextLM(seed=1)
    req = Request(question="placeholder")
    ref = generate(target, req, None, max_new_tokens=15)
    res = generate(target, req, CascadeDrafter(Placeholder(), middle, inner_gamma=3), gamma=4, max_new_tokens=15)
    assert res.tokens == ref.tokens
