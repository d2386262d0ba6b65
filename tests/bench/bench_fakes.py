"""Test doubles for the benchmark harness: a fake backend with scripted timings and faults.

Torch-free on purpose (the kill test imports it in a fresh subprocess); tiny real models
live in bench_models.py."""

from __future__ import annotations

import time

from evspec.bench.config import BenchItem
from evspec.decoding.stats import RequestStats, Result, RoundStats
from evspec.models.request import Request

EOS = 2


def make_items(n: int, *, bad: set[int] = frozenset(), qtypes: tuple[str, ...] = ("a", "b")) -> list[BenchItem]:
    """``n`` items with questions ``q0..``; indices in ``bad`` fail to load (a bad clip)."""

    def load(i: int) -> Request:
        if i in bad:
            raise FileNotFoundError(f"clip {i}: events file missing")
        return Request(f"question {i}?", clip_id=f"c{i}", qtype=qtypes[i % len(qtypes)])

    return [
        BenchItem(f"r{i}", load=lambda i=i: load(i), clip_id=f"c{i}", qtype=qtypes[i % len(qtypes)],
                  question=f"question {i}?")
        for i in range(n)
    ]


class FakeDrafter:
    def __init__(self, name: str) -> None:
        self.name = name

    def begin(self, request, target, state, first_token):  # pragma: no cover - not driven
        pass


class _Vocab:
    vocab_size = 50
    eos_token_id = EOS


class FakeBackend:
    """Scripted generate: 10 answer tokens; target-only costs 10 ms per step + 20 ms prefill;
    a drafter with γ accepts ``accept[name]`` drafts per round (capped by γ) at 1 ms per
    drafted token and 12 ms per score pass.  ``interrupt_after`` raises KeyboardInterrupt
    on that generate call; ``fail`` = {(request question, drafter name)} raise an OOM-like
    error; ``sleep`` slows each call (for kill tests).  ``cold_ms``: the first evspec run on
    a clip since the last ``clear_caches`` pays this much more prefill (a per-clip prefix
    cache), whichever configuration it is."""

    def __init__(self, *, accept: dict[str, int] | None = None, interrupt_after: int | None = None,
                 fail: set[tuple[str, str]] = frozenset(), broken: set[str] = frozenset(),
                 sleep: float = 0.0, wrong_tokens: set[str] = frozenset(),
                 cold_ms: float = 0.0) -> None:
        self.target = _Vocab()
        self.accept = accept or {}
        self.interrupt_after = interrupt_after
        self.fail, self.broken, self.sleep = fail, broken, sleep
        self.wrong_tokens = wrong_tokens
        self.calls: list[tuple[str, str, int]] = []
        self.recovered = 0
        self.cold_ms = cold_ms
        self.cached_clips: set[str] = set()
        self.cleared = 0

    def make_drafter(self, name: str):
        if name in self.broken:
            raise ValueError(f"drafter {name!r} needs a draft model")
        return FakeDrafter(name)

    def _tick(self, question: str, name: str, gamma: int) -> None:
        self.calls.append((question, name, gamma))
        if self.interrupt_after is not None and len(self.calls) > self.interrupt_after:
            raise KeyboardInterrupt
        if self.sleep:
            time.sleep(self.sleep)
        if (question, name) in self.fail:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")

    def generate(self, request, drafter, *, gamma, max_new_tokens, temperature, top_p, seed) -> Result:
        name = drafter.name.split("@")[0] if drafter else "none"  # "x@alpha=.." when controlled
        self._tick(request.question, name, gamma)
        n_tok = min(10, max_new_tokens)
        tokens = [5 + (len(request.question) + i) % 40 for i in range(n_tok)]
        if name in self.wrong_tokens:
            tokens[-1] = 49
        stats = RequestStats(drafter=name, gamma=gamma if drafter else 0)
        prefill = 20.0
        if request.clip_id not in self.cached_clips:
            prefill += self.cold_ms
            self.cached_clips.add(request.clip_id)
        stats.target_prefill_ms, stats.ttft_ms = prefill, prefill
        made = 1
        while made < n_tok:
            if drafter is None:
                stats.rounds.append(RoundStats(0, 0, 0.0, 10.0))
                made += 1
                continue
            k = min(gamma, n_tok - made - 1) if n_tok - made > 1 else 0
            n = min(self.accept.get(name, 0), k)
            stats.rounds.append(RoundStats(k, n, 1.0 * k, 12.0))
            made += n + 1
        stats.new_tokens = n_tok
        stats.total_ms = prefill + sum(r.draft_ms + r.score_ms for r in stats.rounds)
        stats.stop_reason = "max_new_tokens"
        return Result(tokens=tokens, text=" ".join(map(str, tokens)), stats=stats)

    def hf_generate(self, request, max_new_tokens):
        self._tick(request.question, "hf-generate", 0)
        n_tok = min(10, max_new_tokens)
        return [5 + (len(request.question) + i) % 40 for i in range(n_tok)], 250.0

    def decode_text(self, ids):
        return " ".join(map(str, ids))

    def synchronize(self) -> None:
        pass

    def recover(self) -> None:
        self.recovered += 1

    def clear_caches(self, drafters) -> None:
        self.cached_clips.clear()
        self.cleared += 1

    def describe(self) -> dict:
        return {"target": "fake", "dtype": "float32"}
