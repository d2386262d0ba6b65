"""The pipelined schedule (decoding/pipeline.py) is lossless, pre-drafts really overlap
scoring, and its counters add up."""

from __future__ import annotations

import random
import time

import pytest
import torch

from engine_doubles import FixedTarget, TinyTextLM
from evspec.decoding.drafters import ModelDrafter, PromptLookupDrafter
from evspec.decoding.drafters.controlled import ControlledDrafter
from evspec.decoding.engine import generate
from evspec.decoding.pipeline import PipelineStats, generate_pipelined
from evspec.decoding.protocols import Draft
from evspec.models.request import Request
from evspec.models.state import ScoreOutput, TargetState
from test_sampling import chi2_pvalue


def _check_counters(s: PipelineStats) -> None:
    assert isinstance(s, PipelineStats)
    transitions = max(len(s.rounds) - 1, 0)
    assert s.predraft_used + s.predraft_discarded + s.cold_rounds == transitions, s.pipeline_counters()
    assert s.predraft_launched - s.predraft_used - s.predraft_discarded in (0, 1), s.pipeline_counters()
    assert s.draft_busy_ms >= s.predraft_ms >= 0.0


# -- greedy: identical to target-only ----------------------------------------------------
def _make(kind: str, target: TinyTextLM, other: TinyTextLM, reference: list[int], seed: int):
    if kind == "eventgpt":  # a second model re-synchronised every round (ModelDrafter)
        return ModelDrafter(other, name="eventgpt"), None
    if kind == "self":
        return ModelDrafter(target, name="self"), None
    if kind == "prompt-lookup":
        return PromptLookupDrafter(), None
    drafter = ControlledDrafter(ModelDrafter(other), target, alpha=(seed % 5) / 4, seed=seed)
    drafter.set_reference(reference, stream=seed)
    return drafter, reference


@pytest.mark.parametrize("block", range(3))
def test_greedy_identical_randomized(block):
    """25 random cases per block: tiny models (some with likely EOS), γ 1-6, token limits
    that end mid-round; drafters eventgpt, self, prompt-lookup, acceptance-controlled."""
    rng = random.Random(500 + block)
    targets = [TinyTextLM(seed=block, eos_bias=0.0), TinyTextLM(seed=block + 10, eos_bias=3.0)]
    others = [TinyTextLM(seed=block + 20), TinyTextLM(seed=block + 30, eos_bias=3.0)]
    kinds = ("eventgpt", "self", "prompt-lookup", "controlled")
    for case in range(25):
        target, other = rng.choice(targets), rng.choice(others)
        kind, gamma = kinds[case % len(kinds)], rng.randint(1, 6)
        req = Request(question="".join(rng.choice("abcab xy") for _ in range(rng.randint(1, 12))))
        limit = rng.randint(1, 30)
        ref = generate(target, req, None, max_new_tokens=limit).tokens
        drafter, forced = _make(kind, target, other, ref, case)
        res = generate_pipelined(target, req, drafter, gamma=gamma, max_new_tokens=limit, forced_reference=forced)
        assert res.tokens == ref, (block, case, kind, gamma, limit)
        s = res.stats
        _check_counters(s)
        assert s.new_tokens == len(ref) and s.stop_reason in ("eos", "max_new_tokens")
        assert all(0 <= r.accepted <= r.drafted <= gamma for r in s.rounds)
        if s.stop_reason != "eos":  # every round adds its accepted drafts plus one
            assert len(ref) == 1 + s.accepted + len(s.rounds)
        if kind == "self":  # a perfect drafter: every draft accepted, every guess right
            assert s.alpha == 1.0 or s.drafted == 0
            assert s.predraft_discarded == 0


def test_forced_reference_equals_sequential():
    """Acceptance-controlled runs give the reference tokens on both schedules; at α = 1
    every pre-draft is used."""
    target, other = TinyTextLM(seed=4), TinyTextLM(seed=5)
    for i, question in enumerate(("abc", "xyxyx", "a b c d")):
        req = Request(question=question)
        ref = generate(target, req, None, max_new_tokens=40, stop_at_eos=False).tokens
        for alpha in (0.0, 0.5, 1.0):
            out = {}
            for schedule, run in (("sequential", generate), ("pipelined", generate_pipelined)):
                drafter = ControlledDrafter(ModelDrafter(other), target, alpha=alpha, seed=i)
                drafter.set_reference(ref, stream=i)
                out[schedule] = run(target, req, drafter, gamma=3, max_new_tokens=40, stop_at_eos=False,
                                    forced_reference=ref)
            assert out["sequential"].tokens == out["pipelined"].tokens == ref
            s = out["pipelined"].stats
            _check_counters(s)
            assert s.early_begin  # the first token is known: the prefills overlapped
            if alpha == 1.0:
                assert s.alpha == 1.0 and s.predraft_discarded == 0 and s.predraft_used >= len(s.rounds) - 2
            if alpha == 0.0:
                assert s.accepted == 0 and s.predraft_used == 0


# -- sampling: the target's distribution -----------------------------------------------------
V = 6
P = torch.tensor([0.40, 0.25, 0.15, 0.12, 0.08, 0.00])


class TableDrafter:
    """Context-dependent drafter: each draft sampled from ``Q[previous token]``; rewindable."""

    name = "table"

    def __init__(self, q_table: torch.Tensor):
        self.Q = q_table  # [V, V]
        self.committed: list[int] = []
        self.proposed: list[int] = []

    def begin(self, request, target, state, first_token):
        self.committed, self.proposed = [int(first_token)], []

    def propose(self, k, temperature, generator):
        last, toks, rows = self.committed[-1], [], []
        for _ in range(k):
            q = self.Q[last]
            last = int(torch.multinomial(q, 1, generator=generator)) if temperature > 0 else int(q.argmax())
            toks.append(last)
            rows.append(q)
        self.proposed = toks
        probs = torch.stack(rows) if (rows and temperature > 0) else None
        return Draft(tokens=torch.tensor(toks, dtype=torch.long), probs=probs)

    def accept(self, n, t):
        assert 0 <= n <= len(self.proposed)
        self.committed += self.proposed[:n] + [int(t)]
        self.proposed = []

    def rewind(self, n):
        assert not self.proposed and n <= len(self.committed)
        del self.committed[len(self.committed) - n :]

    def end(self):
        pass


def _q_table() -> torch.Tensor:
    """Rows far from P and from each other (so a wrong q row would show), full support:
    after token 0 mostly 1, after anything else mostly 0 (P's mode: hits are frequent)."""
    g = torch.Generator().manual_seed(0)
    q = torch.rand(V, V, generator=g) + 0.05
    q = 0.3 * q / q.sum(-1, keepdim=True)
    q[0, 1] += 0.7
    q[1:, 0] += 0.7
    return q


def test_sampling_matches_target_distribution():
    """Tokens 1-3 each follow p (context-free target), also token 3 in the runs where it
    came from a used pre-draft; both generators seeded, threads interleaving freely."""
    target, q = FixedTarget(P), _q_table()
    counts = torch.zeros(3, V)
    from_predraft = torch.zeros(V)
    req = Request(question="x")
    for seed in range(1500):
        res = generate_pipelined(target, req, TableDrafter(q), gamma=1, max_new_tokens=5, temperature=1.0, seed=seed)
        for pos in range(1, 4):
            counts[pos - 1, res.tokens[pos]] += 1
        if res.stats.predraft_used:  # round 2 verified the pre-drafted token 3
            from_predraft[res.tokens[3]] += 1
    for pos in range(3):
        assert chi2_pvalue(counts[pos], P) > 1e-3, (pos + 1, counts[pos] / counts[pos].sum())
    assert from_predraft.sum() > 200, from_predraft.sum()
    assert chi2_pvalue(from_predraft, P) > 1e-3, from_predraft / from_predraft.sum()


def test_sampling_same_seed_same_output():
    target, drafter_model = TinyTextLM(seed=0, vocab=40), TinyTextLM(seed=1, vocab=40)
    with torch.no_grad():  # flatten so sampling is genuinely random
        for m in (target, drafter_model):
            m.lm_head.weight.div_(8.0)
    req = Request(question="seeded")
    runs = [generate_pipelined(target, req, ModelDrafter(drafter_model), gamma=3, max_new_tokens=20,
                               temperature=1.0, seed=s).tokens for s in (11, 11, 12)]
    assert runs[0] == runs[1] and runs[0] != runs[2]


# -- overlap: the drafter works while the target scores -------------------------------------
STEP = 0.03  # seconds per model call of the slow doubles (long enough to dwarf thread hand-offs)


def _rule(t: int) -> int:
    return (3 * t + 1) % 11


class SlowTarget:
    """A greedy target whose next token is ``_rule(last)``; every pass sleeps ``STEP``."""

    vocab_size, eos_token_id, max_context = 11, -1, 10_000
    device = torch.device("cpu")

    def prefill(self, request, *, return_hidden=False):
        time.sleep(STEP)
        return TargetState(cache=None, length=1, last_logits=self._row(0), prompt_ids=torch.tensor([0]))

    def _row(self, t: int) -> torch.Tensor:
        return torch.nn.functional.one_hot(torch.tensor(_rule(t)), self.vocab_size).float() * 10

    def score(self, state, tokens, *, return_hidden=False):
        time.sleep(STEP)
        state.length += tokens.numel()
        return ScoreOutput(logits=torch.stack([self._row(int(t)) for t in tokens]))

    def rollback(self, state, n):
        state.length -= n

    def decode_text(self, ids):
        return ""


class SlowOracle(TableDrafter):
    """Always right (it knows the rule); every propose sleeps ``STEP``."""

    name = "slow-oracle"

    def __init__(self):
        super().__init__(torch.zeros(0))

    def propose(self, k, temperature, generator):
        time.sleep(STEP)
        toks, last = [], self.committed[-1]
        for _ in range(k):
            last = _rule(last)
            toks.append(last)
        self.proposed = toks
        return Draft(tokens=torch.tensor(toks, dtype=torch.long))


def test_predrafting_overlaps_scoring():
    """Draft and score cost the same: sequential pays both per round, pipelined ~one."""
    req = Request(question="q")
    seq = generate(SlowTarget(), req, SlowOracle(), gamma=2, max_new_tokens=31)
    pip = generate_pipelined(SlowTarget(), req, SlowOracle(), gamma=2, max_new_tokens=31)
    assert pip.tokens == seq.tokens
    s = pip.stats
    _check_counters(s)
    assert s.predraft_used == len(s.rounds) - 1 and s.predraft_discarded == 0
    assert s.total_ms < 0.8 * seq.stats.total_ms, (s.total_ms, seq.stats.total_ms)
    assert s.predraft_ms > 0.8 * STEP * 1e3 * s.predraft_used  # the hidden drafting time


# -- drafters that cannot be pre-drafted: the same loop without pre-drafts --------------------
class NoRewind(TableDrafter):
    rewind = None  # type: ignore[assignment]  # (cascade.can_rewind looks for a callable)


class HiddenDrafter(TableDrafter):
    """Needs the target's hidden states (like the event heads); checks their shapes."""

    needs_target_hidden = True

    def begin(self, request, target, state, first_token):
        assert state.last_hidden is not None and state.last_hidden.ndim == 1
        super().begin(request, target, state, first_token)

    def accept(self, n, t, target_hidden=None):
        assert target_hidden is not None and target_hidden.shape[0] == n + 1
        super().accept(n, t)


@pytest.mark.parametrize("cls", [NoRewind, HiddenDrafter])
def test_fallback_without_predrafts_is_lossless(cls):
    target = TinyTextLM(seed=7, vocab=V)
    req = Request(question="fallback")
    ref = generate(target, req, None, max_new_tokens=25).tokens
    res = generate_pipelined(target, req, cls(_q_table()), gamma=3, max_new_tokens=25)
    assert res.tokens == ref
    s = res.stats
    assert s.fallback and s.predraft_launched == 0 and s.cold_rounds == len(s.rounds) - 1


class Exploding(TableDrafter):
    def __init__(self):
        super().__init__(_q_table())
        self.ended = False

    def propose(self, k, temperature, generator):
        if len(self.committed) > 3:
            raise RuntimeError("drafter blew up")
        return super().propose(k, temperature, generator)

    def end(self):
        self.ended = True


def test_drafter_errors_reach_the_caller_and_end_runs():
    drafter = Exploding()
    with pytest.raises(RuntimeError, match="blew up"):
        generate_pipelined(TinyTextLM(seed=1, vocab=V), Request(question="boom"), drafter, gamma=2,
                           max_new_tokens=30, stop_at_eos=False)
    assert drafter.ended


@pytest.mark.parametrize("bad", [dict(gamma=0), dict(temperature=-0.1), dict(top_p=0.0), dict(max_new_tokens=0)])
def test_bad_arguments_are_refused(bad):
    target = TinyTextLM(seed=0)
    with pytest.raises(ValueError):
        generate_pipelined(target, Request(question="q"), ModelDrafter(target), **bad)


# -- GPUs (the lead's machine): two devices, and one device with two streams ------------------
class DeviceTextLM(TinyTextLM):
    def __init__(self, device: str, **kw):
        super().__init__(**kw)
        self.model.to(device)

    def prefill(self, request, *, return_hidden=False):
        ids = self.prompt_ids(request)
        with torch.inference_mode():
            emb = self.decoder.embed_tokens(ids.to(self.device))
        return self._prefill_embeds(emb, ids, return_hidden=return_hidden, timings={})


def _cuda_pairs() -> list[tuple[str, str]]:
    if not torch.cuda.is_available():
        return []
    pairs = [("cuda:0", "cuda:0")]
    if torch.cuda.device_count() > 1:
        pairs.append(("cuda:0", "cuda:1"))
    return pairs


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("fast", [False, True])
@pytest.mark.parametrize("devices", _cuda_pairs())
def test_cuda_devices_greedy_identical(devices, fast):
    t_dev, d_dev = devices
    target = DeviceTextLM(t_dev, seed=2, vocab=64, max_context=512)
    other = DeviceTextLM(d_dev, seed=3, vocab=64, max_context=512)
    if fast:  # static KV caches, CUDA graphs captured from both threads
        target.enable_fast()
        other.enable_fast()
    rng = random.Random(9)
    for case in range(12):
        req = Request(question="".join(rng.choice("abcd ") for _ in range(rng.randint(2, 20))))
        ref = generate(target, req, None, max_new_tokens=40).tokens
        for drafter in (ModelDrafter(other), PromptLookupDrafter()):
            res = generate_pipelined(target, req, drafter, gamma=rng.randint(1, 6), max_new_tokens=40)
            assert res.tokens == ref, (devices, fast, case, drafter.name)
            _check_counters(res.stats)
            assert res.stats.draft_device == (d_dev if drafter.name == "model" else "cpu")
