"""The pipelined schedule (PEARL-style): the drafter drafts the next block while the
target scores the current one, possibly on another device.

Phases, as in ``engine.generate`` but with the drafter on a worker thread:

    [drafter prefill ‖ target prefill] -> first token -> draft block 1 ->
    [score block r ‖ pre-draft block r + 1] -> accept (use or discard the pre-draft) -> ...

Notation (see ``decoding.sampling``): γ drafts per round, ``p`` target / ``q`` drafter
distributions.  Every drafter call runs, in order, on one worker thread (inside
``torch.cuda.stream`` of the drafter's device when that is a GPU), so the target's passes
on the main thread overlap with drafting.  Token ids cross devices as host integers (the
drafter's one host sync per call happens on its own stream); probabilities are copied to
the target's device by the worker; target hidden states go to the drafter's device with a
``non_blocking`` copy ordered by a CUDA event.

**Pre-drafting.**  While the target scores ``[pending, d_1..d_k]``, the worker assumes the
whole block will be accepted: it commits ``d_1..d_k`` in the drafter
(``accept(k - 1, d_k)``) and proposes ``1 + γ`` more tokens ``[g, d'_1..d'_γ]``, ``g``
being the drafter's guess of the target's next token.  If the target accepts all ``k``
and its token equals ``g``, ``d'_1..d'_γ`` is the next block, ready at once.  Otherwise
the pre-draft is discarded: ``accept(0, t)``, then ``rewind`` the ``k - n + 1`` tokens
the target did not confirm and ``accept(0, t)`` again, and the next block is drafted
afresh.  The drafter's public ``rewind(n)`` exists for ``ModelDrafter`` (eventgpt,
eventgpt-adapter, eventgpt-lora, self), ``PromptLookupDrafter``, ``ControlledDrafter``
around one of those, and any drafter with such a method.  Other drafters
(heads that need the target's hidden states of tokens not scored yet, cascade) run the
same loop *without* pre-drafting (``PipelineStats.fallback`` says why): only their
prefill may overlap and their calls still run on their own stream.

**Lossless.**  Greedy: every emitted token is the target's argmax (or a draft equal to
it), whatever was drafted, so the output equals target-only greedy decoding.  Sampling:
the drafter samples with its own generator (on its device) and verification with
another (on the target's device, seeded like ``engine.generate``).  A used pre-draft was
sampled from ``q(· | prefix + d_1..d_k + g)`` with draws independent of the verification
draws that decided the hit; given the event "the confirmed prefix is X", it is therefore
distributed as ``q(· | X)``, and its ``q`` rows are those of X.  The acceptance rule
(accept with ``min(1, p/q)``, else resample ``norm(max(0, p − q))``) then yields exactly
``p`` for each position, as in the sequential proof.  Discarded pre-drafts only consume
drafter draws, never verification draws.  Two generators also keep the run deterministic
for a seed although the two threads interleave freely.

This module holds the loop (:func:`generate_pipelined`) and its :class:`PipelineStats`;
the worker thread, the drafter's pre-draft/rewind steps and :func:`pipeline_support` /
:func:`drafter_device` live in ``decoding.pipeline_worker`` (re-exported here).
"""

from __future__ import annotations

import time
from concurrent.futures import Future
from dataclasses import dataclass, fields
from typing import Any

import torch

from evspec.decoding.engine import TokenCallback, check_run, follow_reference, generate, prefill_target
from evspec.decoding.pipeline_worker import (
    _Block,
    _DraftWorker,
    _early_begin,
    _Lane,
    _stream_sync,
    drafter_device,
    pipeline_support,
)
from evspec.decoding.protocols import Drafter, Target
from evspec.decoding.sampling import token_limit, verify
from evspec.decoding.stats import RequestStats, Result, RoundStats
from evspec.models.causal_lm import sync
from evspec.models.request import Request
from evspec.models.state import TargetState

__all__ = ["DRAFT_SEED_OFFSET", "PipelineStats", "drafter_device", "generate_pipelined", "pipeline_support"]


#: added to ``seed`` for the drafter's generator (verification uses ``seed`` itself)
DRAFT_SEED_OFFSET = 0x9E3779B9


@dataclass
class PipelineStats(RequestStats):
    """``RequestStats`` plus what the pipelined schedule did.

    Per round, ``RoundStats.draft_ms`` is the drafter time the target *waited for* (the
    part not hidden behind scoring); ``draft_busy_ms`` is all drafter work on the worker,
    ``predraft_ms`` its pre-drafting part.  Round transitions: ``rounds - 1 ==
    predraft_used + predraft_discarded + cold_rounds`` (cold: no pre-draft was launched,
    e.g. an EOS in the block or no room left); ``predraft_launched`` exceeds
    ``predraft_used + predraft_discarded`` by one when generation stopped with a pre-draft
    in flight.  ``fallback``: why this drafter was not pre-drafted ("" = it was).
    ``early_begin``: the drafter's prefill overlapped the target's.
    """

    schedule: str = "pipelined"
    target_device: str = ""
    draft_device: str = ""
    fallback: str = ""
    early_begin: bool = False
    predraft_launched: int = 0
    predraft_used: int = 0
    predraft_discarded: int = 0
    cold_rounds: int = 0
    predraft_ms: float = 0.0
    draft_busy_ms: float = 0.0

    def pipeline_counters(self) -> dict[str, Any]:
        """The fields above as one dict (for the bench record)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in _BASE_FIELDS}


_BASE_FIELDS = {f.name for f in fields(RequestStats)}


def generate_pipelined(
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
) -> Result:
    """``engine.generate`` with the pipelined schedule (module docstring): same arguments,
    same output, same ``RequestStats`` fields (a :class:`PipelineStats`).  With no drafter
    there is nothing to overlap: the engine's target-only loop runs."""
    if drafter is None:
        return generate(target, request, None, gamma=gamma, max_new_tokens=max_new_tokens,
                        temperature=temperature, top_p=top_p, seed=seed, on_token=on_token,
                        stop_at_eos=stop_at_eos, forced_reference=forced_reference)
    max_new_tokens = check_run(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                               forced_reference=forced_reference, gamma=gamma)

    device = torch.device(target.device)
    d_device = drafter_device(drafter)
    needs_hidden = bool(getattr(drafter, "needs_target_hidden", False))
    fallback = pipeline_support(drafter)
    early = _early_begin(drafter, forced_reference is not None)
    v_gen = d_gen = None
    if temperature > 0:  # two streams of draws: verification (target) and drafting (drafter)
        v_gen = torch.Generator(device=device).manual_seed(seed)
        d_gen = torch.Generator(device=d_device or torch.device("cpu")).manual_seed(seed + DRAFT_SEED_OFFSET)
    stats = PipelineStats(drafter=drafter.name, gamma=gamma, target_device=str(device),
                          draft_device=str(d_device or "cpu"), fallback=fallback, early_begin=early)
    eos = target.eos_token_id if stop_at_eos else -1
    worker = _DraftWorker(d_device)
    lane = _Lane(drafter, device, d_gen, temperature)
    begun = None

    sync(device)
    if d_device is not None:
        sync(d_device)
    t_start = time.perf_counter()
    try:
        # -- phase 1: prefill the drafter (early: while the target prefills) and the target
        if early:
            placeholder = forced_reference[0] if forced_reference is not None else 0
            blank = TargetState(cache=None, length=0, last_logits=torch.zeros(0),
                                prompt_ids=torch.zeros(0, dtype=torch.long))  # never read
            begun = worker.submit(lane.begin, request, target, blank, placeholder)
        state, first = prefill_target(
            target, request, stats, t_start, temperature=temperature, top_p=top_p, generator=v_gen,
            forced_reference=forced_reference, return_hidden=needs_hidden,
        )
        tokens = [first]
        if on_token:
            on_token([first])
        stop = "eos" if first == eos else ("max_new_tokens" if max_new_tokens == 1 else "")
        if not stop:
            if not early:
                begun = worker.submit(lane.begin, request, target, state, first)
            elif forced_reference is None:
                worker.submit(lane.replace_first, first)
        if begun is not None:
            worker.wait(begun)
            stats.record_draft_begin(drafter)

        pending = first
        block: _Block | None = None  # the next round's drafts, when already drafted
        launched = False  # whether the previous round launched a pre-draft
        while not stop:
            # -- phase 2: the block (pre-drafted, or drafted now while the target waits)
            budget = max_new_tokens - len(tokens)
            room = target.max_context - state.length
            if room < 1:
                stop = "context"
                break
            cap = min(gamma, budget - 1, room - 1)
            if stats.rounds:
                if block is not None:
                    stats.predraft_used += 1
                elif launched:
                    stats.predraft_discarded += 1
                else:
                    stats.cold_rounds += 1
            wait_ms = 0.0
            t0 = time.perf_counter()
            if block is None:
                block, _ = worker.wait(worker.submit(lane.draft, cap))
            else:
                worker.wait()  # the resolve queued last round (re-raises its failure)
            wait_ms += (time.perf_counter() - t0) * 1e3
            d_list = block.tokens
            if len(d_list) > max(cap, 0):
                raise RuntimeError(f"drafter {drafter.name!r} proposed {len(d_list)} tokens, asked for {cap}")
            k = len(d_list)
            d = torch.tensor(d_list, dtype=torch.long)  # [k]

            # -- phase 3: launch the pre-draft of the next block (assuming all k accepted)
            k_next = min(gamma, budget - (k + 1) - 1, room - (k + 1) - 1)
            launched = not fallback and k_next >= 1 and eos not in d_list
            predraft: Future | None = None
            if launched:
                predraft = worker.submit(lane.predraft, k_next)
                stats.predraft_launched += 1

            # -- phase 4: score pending + drafts in one target pass (overlaps phase 3)
            feed = torch.cat([torch.tensor([pending], dtype=torch.long), d])  # [k + 1]
            probs = block.probs
            if probs is not None and probs.device.type == "cuda":
                probs.record_stream(torch.cuda.current_stream(probs.device))
            _stream_sync(device)
            t0 = time.perf_counter()
            scored = target.score(state, feed, return_hidden=needs_hidden)
            verdict = verify(scored.logits, d, probs, temperature=temperature, top_p=top_p,
                             generator=v_gen, n_ids=token_limit(target))
            _stream_sync(device)
            score_ms = (time.perf_counter() - t0) * 1e3
            n, nxt = verdict.n_accepted, verdict.next_token
            if forced_reference is not None:  # the reference stands in for the argmax
                n, nxt = follow_reference(d_list, forced_reference, len(tokens))

            # -- phase 5: accept; keep or discard the pre-draft; re-sync the drafter
            new = d_list[:n] + [nxt]
            if eos in new:
                new = new[: new.index(eos) + 1]
                stop = "eos"
            target.rollback(state, k - n)  # KV: prefix + pending + d_1..d_n
            block = None
            if predraft is not None:
                t0 = time.perf_counter()
                pre, ms = worker.wait(predraft)
                wait_ms += (time.perf_counter() - t0) * 1e3
                stats.predraft_ms += ms
                hit = not stop and n == k and pre.guess is not None and nxt == pre.guess
                if not stop:
                    worker.submit(lane.resolve, hit, n, k, nxt)
                if hit:
                    block = pre
            elif not stop:
                hidden = ready = None
                if needs_hidden:
                    hidden = scored.hidden[: n + 1]  # [n + 1, H]: pending, d_1..d_n
                    if hidden.device.type == "cuda":
                        ready = torch.cuda.Event()
                        ready.record(torch.cuda.current_stream(hidden.device))
                worker.submit(lane.settle, n, nxt, hidden, ready)

            # -- phase 6: record
            tokens.extend(new)
            pending = nxt
            stats.rounds.append(RoundStats(k, n, wait_ms, score_ms))
            if on_token:
                on_token(new)
            if not stop and len(tokens) >= max_new_tokens:
                stop = "max_new_tokens"
    except BaseException:
        worker.finish(drafter.end, quiet=True)
        raise
    worker.finish(drafter.end, quiet=False)
    stats.draft_busy_ms = worker.busy_ms

    sync(device)
    if d_device is not None:
        sync(d_device)
    stats.total_ms = (time.perf_counter() - t_start) * 1e3
    stats.new_tokens = len(tokens)
    stats.stop_reason = stop
    return Result(tokens=tokens, text=target.decode_text(tokens), stats=stats)
