"""Prompt-lookup drafting (n-gram copy, as in HF's prompt lookup decoding).

Proposes the tokens that followed the most recent earlier occurrence of the last
``n``-gram of the context (prompt text + answer so far), trying ``n = max_ngram`` down
to ``min_ngram``.  Deterministic (q one-hot) and free (c ≈ 0); useful when answers repeat
the question's words.
"""

from __future__ import annotations

import numpy as np
import torch

from evspec.decoding.drafters.base import empty_draft
from evspec.decoding.protocols import Draft, Target
from evspec.models.request import Request
from evspec.models.state import TargetState


class PromptLookupDrafter:
    name = "prompt-lookup"

    def __init__(self, *, max_ngram: int = 3, min_ngram: int = 1) -> None:
        if not 1 <= min_ngram <= max_ngram:
            raise ValueError(f"need 1 <= min_ngram <= max_ngram, got {min_ngram}, {max_ngram}")
        self.max_ngram, self.min_ngram = max_ngram, min_ngram
        self.timings: dict[str, float] = {}
        self._context: list[int] = []
        self._proposed: list[int] = []
        self._limit = 0
        self._prompt_len = 0  # context tokens that came from the prompt

    def begin(self, request: Request, target: Target, state: TargetState, first_token: int) -> None:
        self._limit = target.vocab_size
        prompt = state.prompt_ids.tolist()
        special = {getattr(target, "video_token_id", None), getattr(target, "image_token_id", None)}
        # placeholders (video ids, EventGPT's -200) are never worth proposing
        self._context = [t for t in prompt if t not in special and t >= 0] + [first_token]
        self._prompt_len = len(self._context) - 1
        self._proposed = []
        self.timings = {}

    def _lookup(self, k: int) -> list[int]:
        ctx = np.asarray(self._context, dtype=np.int64)
        for n in range(min(self.max_ngram, len(ctx) - 1), self.min_ngram - 1, -1):
            pattern = ctx[-n:]
            windows = np.lib.stride_tricks.sliding_window_view(ctx[:-1], n)  # [L - n, n]
            hits = np.flatnonzero((windows == pattern).all(axis=1))
            if hits.size:
                start = int(hits[-1]) + n  # most recent occurrence
                return ctx[start : start + k].tolist()
        return []

    def propose(self, k: int, temperature: float, generator: torch.Generator | None) -> Draft:
        self._proposed = self._lookup(k) if k > 0 else []
        if not self._proposed:
            return empty_draft()
        return Draft(tokens=torch.tensor(self._proposed, dtype=torch.long), probs=None)

    def accept(self, n_accepted: int, next_token: int) -> None:
        if not 0 <= n_accepted <= len(self._proposed):
            raise ValueError(f"accepted {n_accepted} of {len(self._proposed)} drafts")
        self._context.extend(self._proposed[:n_accepted])
        self._context.append(next_token)
        self._proposed = []

    def rewind(self, n: int) -> None:
        """Forget the last ``n`` accepted answer tokens (the first token included; never
        the prompt).  Call between rounds only, then ``accept(0, token)``."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError(f"prompt-lookup: rewind count must be an integer >= 0, got {n!r}")
        if n == 0:
            return
        if self._proposed:
            raise RuntimeError("prompt-lookup: rewind inside a round (after propose, before accept)")
        answer = len(self._context) - self._prompt_len
        if n > answer:
            raise ValueError(f"prompt-lookup: cannot rewind {n} tokens, only {answer} were accepted")
        del self._context[len(self._context) - n :]

    def end(self) -> None:
        self._context, self._proposed = [], []
        self._prompt_len = 0
