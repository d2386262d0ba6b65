"""Cascade drafting (research note §6.2): a cheap drafter drafts for a middle model (e.g.
EventGPT), whose speculative output is the draft the target verifies.

One ``propose(k)`` runs speculative decoding *of the middle model*: the cheap drafter
proposes, the middle model scores ``[pending, d_1..d_j]`` in one pass and the shared
acceptance rule (:func:`evspec.decoding.sampling.verify`) keeps ``n`` drafts plus one
middle token; rounds repeat until ``k`` tokens exist (or ``max_inner_rounds``).

Why the draft is lossless for the target, and what ``q`` is.  Speculative decoding is
lossless, so the tokens the middle level emits have exactly the middle model's
distribution: given the context and the earlier emitted tokens ``t_<i``, ``t_i`` ~
``p_mid(· | t_<i)`` (after the same temperature / top-p filtering).  That is exactly the
condition the target's acceptance rule needs, with ``q_i = p_mid(· | t_<i)`` filtered --
the middle's full distribution at that position, *not* the residual a rejected draft was
resampled from, and not the cheap drafter's q.  So ``Draft.probs`` holds the middle's
filtered probabilities at every emitted position (``None`` when greedy: the draft is then
a deterministic function of the context, q one-hot).  Dropping tokens off the end of the
emitted sequence (truncation to ``k``) keeps this property.

Re-synchronisation.  After the target's verdict (``accept(n, t)``) both levels must hold
exactly ``context + t_1..t_n + t``:

* middle model: its KV holds ``pending + t_1..t_{E-1}`` of the E emitted tokens (the last
  one is unfed); roll back to ``t_1..t_n`` (or queue ``t_E`` when all E were accepted);
* cheap drafter: the accept of the *last* inner round is deferred until the target's
  verdict, so a rejection inside that round maps to one ordinary ``accept(m, t)``.  A
  rejection inside an *earlier* round needs the drafter to forget committed tokens
  (:func:`rewind`): supported for drafters with a ``rewind(n)`` method (``ModelDrafter``,
  ``PromptLookupDrafter``, ``ControlledDrafter`` around one); for any other drafter the
  cascade runs one inner round per target round (``max_inner_rounds=1``), which never
  needs it.
"""

from __future__ import annotations

import torch

from evspec.decoding.drafters.base import DrafterError, empty_draft
from evspec.decoding.drafters.model import ModelDrafter
from evspec.decoding.protocols import Draft, Drafter, Target
from evspec.decoding.sampling import logits_to_probs, verify
from evspec.models.request import Request
from evspec.models.state import TargetState


def can_rewind(drafter: Drafter) -> bool:
    """Whether :func:`rewind` works on ``drafter``: it has a ``rewind(n)`` method (and,
    for wrappers such as ``ControlledDrafter``, its ``rewindable`` flag is true)."""
    if not callable(getattr(drafter, "rewind", None)):
        return False
    return bool(getattr(drafter, "rewindable", True))


def rewind(drafter: Drafter, n: int) -> None:
    """Make ``drafter`` forget the last ``n`` tokens of its accepted sequence, through its
    public ``rewind(n)`` (``ModelDrafter``, ``PromptLookupDrafter``, ``ControlledDrafter``
    around one of those, or any drafter that has one).

    Call between rounds only (after ``accept``); follow with ``accept(0, token)`` so the
    drafter has a token to continue from.
    """
    if n < 0:
        raise ValueError(f"rewind count must be >= 0, got {n}")
    if n == 0:
        return
    if not can_rewind(drafter):
        raise TypeError(f"drafter {getattr(drafter, 'name', drafter)!r} cannot rewind accepted tokens")
    drafter.rewind(n)  # type: ignore[attr-defined]


class CascadeDrafter:
    """``inner`` drafts for ``middle``; ``middle``'s speculative output drafts for the target.

    ``middle``: a model with ``prefill/score/rollback`` (the ``Target`` protocol), e.g.
    EventGPT.  ``inner_gamma``: drafts per inner round.  ``max_inner_rounds``: inner rounds
    per ``propose`` (None = as many as needed for k tokens; forced to 1 when ``inner``
    cannot rewind).  ``top_p`` filters the middle's distribution (as for ``ModelDrafter``).
    ``stats`` accumulates the inner level's rounds ``(drafted, accepted)``.
    """

    needs_target_hidden = False

    def __init__(
        self,
        inner: Drafter,
        middle: Target,
        *,
        inner_gamma: int = 4,
        max_inner_rounds: int | None = None,
        name: str | None = None,
        top_p: float = 1.0,
    ) -> None:
        if getattr(inner, "needs_target_hidden", False):
            raise DrafterError(
                f"cascade: inner drafter {inner.name!r} needs the verifier's hidden states, which "
                "the middle model does not provide; use a model or prompt-lookup drafter inside"
            )
        if isinstance(inner_gamma, bool) or not isinstance(inner_gamma, int) or inner_gamma < 1:
            raise ValueError(f"CascadeDrafter.inner_gamma must be an integer >= 1, got {inner_gamma!r}")
        if max_inner_rounds is not None and max_inner_rounds < 1:
            raise ValueError(f"CascadeDrafter.max_inner_rounds must be >= 1 or None, got {max_inner_rounds!r}")
        if not 0.0 < top_p <= 1.0:
            raise ValueError(f"CascadeDrafter.top_p must be in (0, 1], got {top_p!r}")
        if not can_rewind(inner):
            max_inner_rounds = 1
        self.inner, self.middle = inner, middle
        self.inner_gamma = inner_gamma
        self.max_inner_rounds = max_inner_rounds
        self.top_p = top_p
        self.name = name or f"cascade({inner.name}>middle)"
        self.timings: dict[str, float] = {}
        self.stats: list[tuple[int, int]] = []  # inner rounds: (drafted, accepted by middle)
        self._state: TargetState | None = None
        self._pending: list[int] = []  # committed tokens not yet fed to the middle
        self._emitted: list[int] = []  # this round's middle tokens (before truncation)
        self._returned = 0  # how many of them went to the target
        self._last: tuple[int, int, int] | None = None  # last inner round: (start, n, next)
        self._shared: int | None = None

    # -- helpers ---------------------------------------------------------------------------
    def _map(self, token: int) -> int:
        """Target ids outside the shared vocabulary reach the middle as ``<unk>`` (0)."""
        assert self._shared is not None
        return token if token < self._shared else 0

    def _limit(self, logits: torch.Tensor) -> torch.Tensor:
        """``[T, V_mid]`` logits with ids outside the shared vocabulary masked."""
        assert self._shared is not None
        if logits.shape[-1] > self._shared:
            logits = logits.clone()
            logits[..., self._shared :] = float("-inf")
        return logits

    def _valid_prefix(self, d: torch.Tensor, q_inner: torch.Tensor | None) -> torch.Tensor:
        """Drafts up to the first id the middle model cannot read (e.g. a -200 media
        placeholder that prompt lookup copied from the middle's prompt).

        Truncating there is lossless for a deterministic drafter (q one-hot: any proposal
        law is fine); a sampling drafter must propose within the middle's vocabulary.
        """
        bad = ((d < 0) | (d >= self.middle.vocab_size)).nonzero()
        if not bad.numel():
            return d
        if q_inner is not None:
            raise DrafterError(
                f"cascade: inner drafter {self.inner.name!r} sampled id {int(d[bad[0, 0]])} outside the "
                f"middle model's vocabulary of {self.middle.vocab_size}"
            )
        return d[: int(bad[0, 0])]

    # -- Drafter protocol ------------------------------------------------------------------
    def begin(self, request: Request, target: Target, state: TargetState, first_token: int) -> None:
        if self._shared is None:
            helper = ModelDrafter(self.middle)
            self._shared = helper._check_vocab(target)
        self.timings = {}
        try:
            self._state = self.middle.prefill(request)
        except ValueError as exc:
            raise DrafterError(f"drafter {self.name!r}: the middle model cannot prefill this request: {exc}") from exc
        for key in ("preprocess_ms", "vision_ms", "prefill_ms"):
            self.timings[key] = self._state.timings.get(key, 0.0)
        first = self._map(first_token)
        self._pending = [first]
        self._emitted, self._last, self._returned = [], None, 0
        self.stats = []
        self.inner.begin(request, self.middle, self._state, first)
        inner_t = getattr(self.inner, "timings", {})
        for key in ("preprocess_ms", "vision_ms", "prefill_ms"):
            self.timings[key] += inner_t.get(key, 0.0)

    def propose(self, k: int, temperature: float, generator: torch.Generator | None) -> Draft:
        state = self._state
        if state is None:
            raise RuntimeError("propose() before begin()")
        self._emitted, self._last, self._returned = [], None, 0
        q_rows: list[torch.Tensor] = []  # [V] each: p_mid at each emitted position
        rounds = 0
        while len(self._emitted) < k and (self.max_inner_rounds is None or rounds < self.max_inner_rounds):
            room = self.middle.max_context - state.length - len(self._pending)
            need = k - len(self._emitted)
            j = min(self.inner_gamma, need, room - 1)
            if j < 0:
                break
            if self._last is not None:  # the previous round is not the last: settle it now
                _, n_prev, next_prev = self._last
                self.inner.accept(n_prev, next_prev)
            d_draft = self.inner.propose(j, temperature, generator) if j > 0 else empty_draft()
            d = d_draft.tokens.reshape(-1).long().cpu()[:j]  # [j'] (j' <= j)
            q_inner = None if d_draft.probs is None else d_draft.probs[: d.numel()]
            d = self._valid_prefix(d, q_inner)
            # -- the middle scores pending + drafts in one pass, verifies with the same rule
            feed = torch.cat([torch.tensor(self._pending, dtype=torch.long), d])  # [P + j']
            logits = self.middle.score(state, feed).logits  # [P + j', V_mid]
            rows = self._limit(logits[len(self._pending) - 1 :])  # [j' + 1, V_mid]
            verdict = verify(rows, d, q_inner, temperature=temperature, top_p=self.top_p, generator=generator)
            n, nxt = verdict.n_accepted, verdict.next_token
            self.middle.rollback(state, int(d.numel()) - n)  # KV: ... pending + d_1..d_n
            self.stats.append((int(d.numel()), n))
            self._last = (len(self._emitted), n, nxt)
            self._emitted.extend(d[:n].tolist() + [nxt])
            if temperature > 0:
                q_rows.extend(logits_to_probs(rows[: n + 1], temperature, self.top_p).unbind(0))
            self._pending = [nxt]
            rounds += 1
        out = self._emitted[:k]
        self._returned = len(out)
        if not out:
            return empty_draft()
        probs = None
        if temperature > 0:
            probs = torch.stack(q_rows[: len(out)])[:, : self._shared]  # [k', V_shared]
        return Draft(tokens=torch.tensor(out, dtype=torch.long), probs=probs)

    def accept(self, n_accepted: int, next_token: int) -> None:
        state = self._state
        if state is None:
            raise RuntimeError("accept() before begin()")
        emitted = self._emitted
        if not 0 <= n_accepted <= self._returned:
            raise ValueError(f"accepted {n_accepted} of {self._returned} drafted tokens")
        t = self._map(next_token)
        # -- middle: KV holds pending_before + emitted[:-1]; emitted[-1] is unfed
        if not emitted:
            self._pending.append(t)
        elif n_accepted == len(emitted):
            self._pending = [emitted[-1], t]
        else:
            self.middle.rollback(state, len(emitted) - 1 - n_accepted)
            self._pending = [t]
        # -- cheap drafter: settle the deferred last round against the target's verdict
        if self._last is None:
            self.inner.accept(0, t)
        else:
            start, n_last, next_last = self._last
            if n_accepted >= start:
                m = n_accepted - start  # tokens of the last round the target kept
                if m <= n_last:
                    self.inner.accept(m, t)
                else:  # all of it, the middle's own token included
                    self.inner.accept(n_last, next_last)
                    self.inner.accept(0, t)
            else:  # rejected inside an earlier round: forget the tail, then append t
                self.inner.accept(n_last, next_last)
                rewind(self.inner, len(emitted) - n_accepted)
                self.inner.accept(0, t)
        self._emitted, self._last, self._returned = [], None, 0

    def end(self) -> None:
        self._state = None
        self._pending, self._emitted, self._last = [], [], None
        self.inner.end()


def make_cascade_drafter(
    target: Target,
    middle: Target,
    *,
    inner: str = "prompt-lookup",
    inner_model: Target | None = None,
    inner_gamma: int = 4,
    max_inner_rounds: int | None = None,
    name: str = "cascade",
    top_p: float = 1.0,
    inner_options: dict | None = None,
) -> CascadeDrafter:
    """``make_drafter("cascade", draft_model=MIDDLE, inner=NAME, ...)``: the drafter named
    ``inner`` (built for ``middle`` as its verifier, with ``inner_model`` as its draft
    model, e.g. a 1-image EventGPT) drafts for ``middle``, which drafts for ``target``."""
    from evspec.decoding.drafters import make_drafter

    if inner.partition("@")[0] in ("none", "cascade"):
        raise DrafterError(f"cascade: inner drafter {inner!r} is not allowed (choose a model or prompt-lookup drafter)")
    cheap = make_drafter(inner, target=middle, draft_model=inner_model, **(inner_options or {}))
    assert cheap is not None
    del target  # the target only verifies; the vocabulary check happens in begin()
    return CascadeDrafter(cheap, middle, inner_gamma=inner_gamma, max_inner_rounds=max_inner_rounds,
                          name=name, top_p=top_p)
