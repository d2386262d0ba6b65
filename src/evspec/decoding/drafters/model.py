"""Draft with a whole language model that is re-synchronised every round.

The ``eventgpt`` drafter is this class over :class:`evspec.models.eventgpt.EventGPT`
(prefilled on the event images); any model with ``prefill/score/rollback`` works, the
target itself included (then everything is accepted: a test).

Re-synchronisation (the research prototype lacked it): the drafter's KV cache always
holds ``prefix + accepted`` tokens; tokens the drafter has not fed yet wait in
``pending``.  ``propose(k)`` feeds ``pending``, then its own drafts ``d_1..d_{k-1}``;
``accept(n, t)`` crops the ``k - 1 - n`` unaccepted drafts (or, when all k pass, queues
``d_k``) and queues the target's token ``t``.  ``rewind(n)`` forgets the last ``n``
committed tokens (the pipelined schedule's discarded pre-drafts, cascades).
"""

from __future__ import annotations

import torch

from evspec.decoding.drafters.base import DrafterError, empty_draft
from evspec.decoding.protocols import Draft, Target
from evspec.decoding.sampling import logits_to_probs
from evspec.models.causal_lm import timed
from evspec.models.request import Request
from evspec.models.state import TargetState


class ModelDrafter:
    """Autoregressive drafting with a model satisfying the ``Target`` protocol."""

    def __init__(self, model: Target, *, name: str = "model", top_p: float = 1.0) -> None:
        self.model = model
        self.name = name
        self.top_p = top_p
        self.timings: dict[str, float] = {}
        self._state: TargetState | None = None
        self._pending: list[int] = []
        self._proposed: list[int] = []
        self._shared: int | None = None
        self._prompt_len = 0  # the drafter's KV length right after its prefill

    # -- vocabulary --------------------------------------------------------------------
    def _check_vocab(self, target: Target) -> int:
        """Ids the drafter may propose: the prefix both tokenizers agree on."""
        from evspec.models.tokenizer import shared_vocab_size

        t_tok = getattr(target, "tokenizer", None)
        d_tok = getattr(self.model, "tokenizer", None)
        if t_tok is None or d_tok is None or t_tok is d_tok:
            return min(self.model.vocab_size, target.vocab_size)
        shared = shared_vocab_size(d_tok, t_tok)
        return min(shared, self.model.vocab_size, target.vocab_size)

    def check_compatible(self, target: Target) -> None:
        """Fail early (before any work) when the drafter's vocabulary disagrees with the
        target's; remember the shared id range."""
        self._shared = self._check_vocab(target)

    # -- Drafter protocol --------------------------------------------------------------
    def begin(self, request: Request, target: Target, state: TargetState, first_token: int) -> None:
        if self._shared is None:
            self._shared = self._check_vocab(target)
        self.timings = {}
        try:
            self._state = self.model.prefill(request)
        except ValueError as exc:
            raise DrafterError(f"drafter {self.name!r} cannot prefill this request: {exc}") from exc
        for key in ("preprocess_ms", "vision_ms", "prefill_ms"):
            self.timings[key] = self._state.timings.get(key, 0.0)
        self._prompt_len = self._state.length
        self._pending = [first_token]
        self._proposed = []

    def _limit(self, logits: torch.Tensor) -> torch.Tensor:
        """Mask ids outside the shared vocabulary (e.g. EventGPT's added ``<ev_*>``)."""
        assert self._shared is not None
        if logits.shape[-1] > self._shared:
            logits = logits.clone()
            logits[..., self._shared :] = float("-inf")
        return logits

    def propose(self, k: int, temperature: float, generator: torch.Generator | None) -> Draft:
        state = self._state
        if state is None:
            raise RuntimeError("propose() before begin()")
        room = self.model.max_context - state.length - len(self._pending)
        k = max(0, min(k, room))
        if k == 0:
            self._proposed = []
            return empty_draft(state.last_logits.device)
        drafted: list[torch.Tensor] = []  # each [1], kept on the device: no host sync per token
        probs: list[torch.Tensor] = []
        # target tokens outside the shared vocabulary (e.g. Video-LLaVA's <pad>) reach the
        # drafter as <unk>: it only guesses, so this cannot change the output
        feed = torch.tensor([t if t < self._shared else 0 for t in self._pending], dtype=torch.long)
        for _ in range(k):
            logits = self._limit(self.model.score(state, feed).logits[-1])  # [V_q]
            if temperature == 0:
                tok = torch.argmax(logits, dim=-1, keepdim=True)  # [1]
            else:
                q = logits_to_probs(logits, temperature, self.top_p)
                tok = torch.multinomial(q, 1, generator=generator)  # [1]
                probs.append(q)
            drafted.append(tok)
            feed = tok
        # KV now holds prefix + pending + d_1..d_{k-1}
        tokens = torch.cat(drafted).cpu()  # [k], the round's one host sync
        self._pending = []
        self._proposed = tokens.tolist()
        return Draft(tokens=tokens, probs=torch.stack(probs) if probs else None)

    def accept(self, n_accepted: int, next_token: int) -> None:
        state = self._state
        assert state is not None
        k = len(self._proposed)
        if not 0 <= n_accepted <= k:
            raise ValueError(f"accepted {n_accepted} of {k} drafts")
        if k == 0:
            self._pending.append(next_token)
            return
        if n_accepted == k:  # d_k was never fed
            self._pending = [self._proposed[-1], next_token]
        else:
            self.model.rollback(state, k - 1 - n_accepted)
            self._pending = [next_token]
        self._proposed = []

    @property
    def committed(self) -> int:
        """Answer tokens the drafter holds since ``begin`` (the first token included): fed
        to its KV cache or still pending."""
        if self._state is None:
            return 0
        return self._state.length - self._prompt_len + len(self._pending)

    def rewind(self, n: int) -> None:
        """Forget the last ``n`` committed tokens (the target did not confirm them).

        Call between rounds only (after ``accept``, never between ``propose`` and
        ``accept``), then ``accept(0, token)`` so the drafter has a token to continue
        from.  Unfed (pending) tokens go first, then the KV cache is rolled back.
        """
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError(f"{self.name}: rewind count must be an integer >= 0, got {n!r}")
        if n == 0:
            return
        if self._state is None:
            raise RuntimeError(f"{self.name}: rewind() before begin()")
        if self._proposed:
            raise RuntimeError(f"{self.name}: rewind inside a round (after propose, before accept)")
        if n > self.committed:
            raise ValueError(f"{self.name}: cannot rewind {n} tokens, only {self.committed} were committed")
        unfed = len(self._pending)
        if n <= unfed:
            self._pending = self._pending[: unfed - n]
        else:
            self.model.rollback(self._state, n - unfed)
            self._pending = []

    def end(self) -> None:
        self._state = None
        self._pending = []
        self._proposed = []
