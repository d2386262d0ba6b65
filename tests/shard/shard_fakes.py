"""A deterministic, torch-free fake backend for the sharding tests (the kill test imports
it in a fresh subprocess).  Answers depend only on the request and the seed, so a split
run must reproduce a single-process run record for record."""

from __future__ import annotations

import time
import zlib

from evspec.decoding.stats import RequestStats, Result, RoundStats

EOS = 2


class _Vocab:
    vocab_size = 64
    eos_token_id = EOS


class _Drafter:
    def __init__(self, name: str) -> None:
        self.name = name


class ShardFakeBackend:
    """Answers of 6 tokens derived from (question, clip, seed); a drafter accepts
    ``min(γ, 2)`` drafts per round; ``sleep`` seconds per call (kill tests)."""

    def __init__(self, *, sleep: float = 0.0) -> None:
        self.target = _Vocab()
        self.sleep = sleep
        self.calls = 0

    def make_drafter(self, name: str) -> _Drafter:
        return _Drafter(name)

    def _answer(self, request, seed: int) -> list[int]:
        base = zlib.crc32(f"{request.clip_id}|{request.question}|{seed}".encode())
        return [3 + (base >> (3 * i)) % 60 for i in range(6)]

    def _tick(self) -> None:
        self.calls += 1
        if self.sleep:
            time.sleep(self.sleep)

    def generate(self, request, drafter, *, gamma, max_new_tokens, temperature, top_p, seed) -> Result:
        self._tick()
        tokens = self._answer(request, seed)[:max_new_tokens]
        stats = RequestStats(drafter=drafter.name if drafter else "none", gamma=gamma if drafter else 0)
        stats.target_prefill_ms = stats.ttft_ms = 5.0
        made = 1
        while made < len(tokens):
            k = min(gamma, len(tokens) - made - 1) if drafter else 0
            n = min(2, k)
            stats.rounds.append(RoundStats(k, n, 0.5 * k, 3.0))
            made += n + 1
        stats.new_tokens = len(tokens)
        stats.total_ms = 5.0 + sum(r.draft_ms + r.score_ms for r in stats.rounds)
        stats.stop_reason = "max_new_tokens"
        return Result(tokens=tokens, text=" ".join(map(str, tokens)), stats=stats)

    def hf_generate(self, request, max_new_tokens):
        self._tick()
        return self._answer(request, 0)[:max_new_tokens], 40.0

    def decode_text(self, ids):
        return " ".join(map(str, ids))

    def synchronize(self) -> None:
        pass

    def recover(self) -> None:
        pass

    def describe(self) -> dict:
        return {"target": "shard-fake", "dtype": "float32"}
