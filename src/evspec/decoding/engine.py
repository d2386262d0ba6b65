"""The speculative-decoding loop (DESIGN.md §3), written as named phases:

    prefill -> first token -> [propose -> score -> accept/rollback -> record]* -> result

Notation: γ (``gamma``) drafts per round, ``p`` target / ``q`` drafter distributions,
α = accepted / drafted, τ = tokens per target pass (see ``decoding.sampling``).  With no
drafter the same loop is the target-only baseline (one token per pass).
"""

from __future__ import annotations

import time
from typing import Callable

import torch

from evspec.decoding.chain import chainable, chained_greedy
from evspec.decoding.gamma import GammaPolicy
from evspec.decoding.protocols import Draft, Drafter, Target
from evspec.decoding.sampling import select, token_limit, validate_sampling, verify
from evspec.decoding.stats import RequestStats, Result, RoundStats
from evspec.models.causal_lm import sync, timed
from evspec.models.state import TargetState
from evspec.models.request import Request

TokenCallback = Callable[[list[int]], None]


def _generator(device: torch.device, seed: int) -> torch.Generator:
    gen = torch.Generator(device=device)
    gen.manual_seed(seed)
    return gen


def check_run(
    *,
    max_new_tokens: int,
    temperature: float,
    top_p: float,
    forced_reference: list[int] | None = None,
    gamma: int | None = None,
) -> int:
    """Validate a decoding loop's arguments (shared by the engine, the pipelined schedule
    and tree verification) and return ``max_new_tokens``, capped at the forced reference's
    length in acceptance-controlled runs."""
    if gamma is not None and (isinstance(gamma, bool) or not isinstance(gamma, int) or gamma < 1):
        raise ValueError(f"gamma must be an integer >= 1, got {gamma!r}")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    validate_sampling(temperature, top_p)
    if forced_reference is not None:
        if temperature != 0:
            raise ValueError("forced_reference (acceptance-controlled) needs greedy decoding")
        if not forced_reference:
            raise ValueError("forced_reference is empty")
        max_new_tokens = min(max_new_tokens, len(forced_reference))
    return max_new_tokens


def prefill_target(
    target: Target,
    request: Request,
    stats: RequestStats,
    t_start: float,
    *,
    temperature: float,
    top_p: float,
    generator: torch.Generator | None,
    forced_reference: list[int] | None = None,
    return_hidden: bool = False,
) -> tuple[TargetState, int]:
    """Phase 1 of every decoding loop: prefill the target, record its stage times and the
    time to first token (from ``t_start``), and choose the first answer token."""
    state = target.prefill(request, return_hidden=return_hidden)
    stats.target_preprocess_ms = state.timings.get("preprocess_ms", 0.0)
    stats.target_vision_ms = state.timings.get("vision_ms", 0.0)
    stats.target_prefill_ms = state.timings.get("prefill_ms", 0.0)
    first = select(state.last_logits, temperature, top_p, generator, token_limit(target))
    if forced_reference is not None:
        first = forced_reference[0]
    sync(target.device)
    stats.ttft_ms = (time.perf_counter() - t_start) * 1e3
    return state, first


def follow_reference(drafts: list[int], reference: list[int], pos: int) -> tuple[int, int]:
    """Acceptance-controlled verification: the reference answer stands in for the target's
    argmax.  ``drafts`` start at answer index ``pos``; returns ``(n accepted, next token)``."""
    n = 0
    while n < len(drafts) and drafts[n] == reference[pos + n]:
        n += 1
    return n, reference[pos + n]


def generate(
    target: Target,
    request: Request,
    drafter: Drafter | None = None,
    *,
    gamma: int = 4,
    max_new_tokens: int = 128,
    temperature: float = 0.0,
    top_p: float = 1.0,
    seed: int = 0,
    on_token: TokenCallback | None = None,
    stop_at_eos: bool = True,
    forced_reference: list[int] | None = None,
    gamma_policy: GammaPolicy | None = None,
    device_greedy: bool = True,
) -> Result:
    """Answer ``request`` with ``target``, drafting ``gamma`` tokens per round.

    Lossless: greedy output equals target-only greedy output token for token; sampled
    output has the target's distribution.  ``on_token`` receives each round's new ids.
    ``stop_at_eos=False`` generates exactly ``max_new_tokens`` (for timing random-weight
    models, whose EOS position is arbitrary).

    ``forced_reference`` (acceptance-controlled benchmarks only, greedy): every model pass
    runs as usual, but the target's choice at each position is taken from this token list
    (its own target-only greedy answer) instead of the argmax of the logits just computed.
    On random-weight models in bf16 the batched score and the one-token step round
    differently and flip near-tied argmaxes; forcing the reference keeps the set α
    meaningful.  Output then equals the reference by construction: not a lossless run.

    ``gamma_policy`` (``evspec.decoding.gamma``) chooses γ before every round and observes
    every round (``gamma`` is then ignored; ``stats.gamma`` records the policy's
    ``max_gamma`` and ``RoundStats.drafted`` the γ really used).  A policy may answer 0:
    that round is a plain target step.

    ``device_greedy``: target-only greedy decoding on a target that can keep the tokens on
    the device (the fast path) runs ``decoding.chain`` instead of the host loop — the same
    tokens, no synchronisation per token.  ``False`` forces the host loop.
    """
    max_new_tokens = check_run(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                               forced_reference=forced_reference, gamma=gamma)

    device = target.device
    gen = _generator(device, seed) if temperature > 0 else None
    n_ids = token_limit(target)  # sampling never draws padded ids the tokenizer lacks
    if gamma_policy is not None:
        gamma = int(gamma_policy.max_gamma)
    stats = RequestStats(drafter=drafter.name if drafter else "none", gamma=gamma if drafter else 0)
    eos = target.eos_token_id if stop_at_eos else -1

    sync(device)
    t_start = time.perf_counter()

    # heads that draft from the target's features (EAGLE-style) get its last hidden states
    needs_hidden = bool(getattr(drafter, "needs_target_hidden", False))

    # -- phase 0: drafters that read their own inputs (event memory) may start them now,
    # beside the target's prefill
    prefetch = getattr(drafter, "prefetch", None)
    if prefetch is not None:
        prefetch(request)

    # -- phase 1: prefill the target, take the first token -----------------------------
    state, first = prefill_target(
        target, request, stats, t_start, temperature=temperature, top_p=top_p, generator=gen,
        forced_reference=forced_reference, return_hidden=needs_hidden,
    )
    tokens = [first]
    if on_token:
        on_token([first])
    stop = "eos" if first == eos else ("max_new_tokens" if max_new_tokens == 1 else "")

    # -- phase 2: prefill the drafter (its own inputs, e.g. the event images) ----------
    if drafter is not None and not stop:
        drafter.begin(request, target, state, first)
        stats.record_draft_begin(drafter)

    if (drafter is None and device_greedy and temperature == 0 and forced_reference is None
            and gamma_policy is None and not stop and chainable(target, state)):
        tokens, stop = chained_greedy(target, state, first, max_new_tokens=max_new_tokens, eos=eos,
                                      stats=stats, on_token=on_token)

    pending = first
    try:
        while not stop:
            budget = max_new_tokens - len(tokens)  # this round may add at most k + 1
            room = target.max_context - state.length  # positions left in the target KV
            if room < 1:
                stop = "context"
                break
            want = gamma if gamma_policy is None else gamma_policy.next_gamma(stats.rounds)
            if want < 0:
                raise ValueError(f"gamma policy {type(gamma_policy).__name__} returned {want} < 0")
            k = min(want, budget - 1, room - 1) if drafter is not None else 0
            rnd: dict[str, float] = {}

            # -- phase 3: propose ------------------------------------------------------
            draft = Draft(tokens=torch.zeros(0, dtype=torch.long))
            if k > 0:
                with timed(device, rnd, "draft_ms"):
                    draft = drafter.propose(k, temperature, gen)
            d = draft.tokens.reshape(-1).long().cpu()  # [k'] (k' <= k)
            k = int(d.numel())

            # -- phase 4: score pending + drafts in one target pass ---------------------
            feed = torch.cat([torch.tensor([pending], dtype=torch.long), d])  # [k + 1]
            with timed(device, rnd, "score_ms"):
                scored = target.score(state, feed, return_hidden=needs_hidden)
                verdict = verify(
                    scored.logits, d, draft.probs, temperature=temperature, top_p=top_p,
                    generator=gen, n_ids=n_ids,
                )
            n, nxt = verdict.n_accepted, verdict.next_token
            if forced_reference is not None:  # the reference stands in for the argmax
                n, nxt = follow_reference(d.tolist(), forced_reference, len(tokens))

            # -- phase 5: accept, roll back both caches ---------------------------------
            new = d[:n].tolist() + [nxt]
            if eos in new:  # an accepted EOS ends the answer there
                new = new[: new.index(eos) + 1]
                stop = "eos"
            target.rollback(state, k - n)  # KV: prefix + pending + d_1..d_n
            if drafter is not None and not stop:
                if needs_hidden:  # hidden states of pending, d_1..d_n: [n + 1, H]
                    drafter.accept(n, nxt, target_hidden=scored.hidden[: n + 1])
                else:
                    drafter.accept(n, nxt)

            # -- phase 6: record ----------------------------------------------------------
            tokens.extend(new)
            pending = nxt
            if drafter is not None:
                stats.rounds.append(RoundStats(k, n, rnd.get("draft_ms", 0.0), rnd.get("score_ms", 0.0)))
                if gamma_policy is not None:
                    gamma_policy.observe(stats.rounds[-1])
            else:
                stats.rounds.append(RoundStats(0, 0, 0.0, rnd.get("score_ms", 0.0)))
            if on_token:
                on_token(new)
            if not stop and len(tokens) >= max_new_tokens:
                stop = "max_new_tokens"
    finally:
        if drafter is not None:
            drafter.end()

    sync(device)
    stats.total_ms = (time.perf_counter() - t_start) * 1e3
    stats.new_tokens = len(tokens)
    stats.stop_reason = stop
    return Result(tokens=tokens, text=target.decode_text(tokens), stats=stats)
