"""One measurement → one record (a JSON-ready dict; schema in docs/bench.md).

A record holds the answer tokens, the stage timings (vision encode and prefill of each
model, time to first token, per-round draft and score time, total), α, τ, the accepted-
length histogram, per-position acceptance, and the lossless check against the target-only
answer of the same request.
"""

from __future__ import annotations

import datetime as _dt
import time
import traceback
from typing import TYPE_CHECKING, Any

from evspec.bench.backend import BenchBackend
from evspec.bench.config import HF_BASELINES, HF_GENERATE, TARGET_ONLY, BenchConfig, BenchItem
from evspec.bench.records import record_key
from evspec.decoding.stats import Result
from evspec.models.request import Request

if TYPE_CHECKING:
    from evspec.decoding.protocols import Drafter

SCHEMA = 1


def kind_of(drafter: str) -> str:
    """``hf`` (a transformers baseline), ``target`` (evspec target-only) or ``spec``."""
    return "hf" if drafter in _HF_VARIANT else ("target" if drafter == TARGET_ONLY else "spec")


#: HF pseudo-drafter -> the ``variant`` passed to ``BenchBackend.hf_generate``
_HF_VARIANT = {name: variant for variant, name in HF_BASELINES.items()}


def compare(tokens: list[int], reference: list[int] | None) -> dict[str, Any]:
    """The lossless check: ``matches_target`` (token-identical to the target-only answer)
    and ``prefix_match`` (fraction of the longer answer reproduced before the first
    differing token).  Both None without a reference."""
    if reference is None:
        return {"matches_target": None, "prefix_match": None}
    same = 0
    for a, b in zip(tokens, reference):
        if a != b:
            break
        same += 1
    longest = max(len(tokens), len(reference))
    return {
        "matches_target": tokens == reference,
        "prefix_match": same / longest if longest else 1.0,
    }


def base_record(
    item: BenchItem, drafter: str, gamma: int, config: BenchConfig, session: int,
    provenance: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The fields every record has, ok or failed.  ``provenance``: the session's facts
    (``env.provenance``); ``label``: measured, acceptance-controlled or -replayed."""
    return {
        "schema": SCHEMA,
        "key": record_key(item.request_id, drafter, gamma),
        "request_id": item.request_id,
        "clip_id": item.clip_id,
        "qtype": item.qtype,
        "question": item.question,
        "drafter": drafter,
        "gamma": gamma,
        "kind": kind_of(drafter),
        "controlled_alpha": config.controlled_alpha if kind_of(drafter) == "spec" else None,
        "label": config.label if kind_of(drafter) == "spec" else "measured",
        "cache": config.cache,
        "provenance": provenance,
        "schedule": config.schedule,
        "temperature": config.temperature,
        "session": session,
        "time": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def failed_record(base: dict[str, Any], exc: BaseException) -> dict[str, Any]:
    """A measurement that raised: the error type, message and traceback (its last 6000
    characters: the innermost frames, where the cause is)."""
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return {
        **base,
        "status": "failed",
        "error_type": type(exc).__name__,
        "error": str(exc) or type(exc).__name__,
        "traceback": tb[-6000:],
    }


def result_fields(result: Result, wall_ms: float) -> dict[str, Any]:
    """The figures of one evspec ``generate`` result."""
    s = result.stats
    # every per-request stage the engine times (``*_ms`` fields: preprocess, vision,
    # prefill of each model, time to first token, total)
    timings = {k: float(v) for k, v in vars(s).items() if k.endswith("_ms") and isinstance(v, int | float)}
    timings["draft_ms"] = sum(r.draft_ms for r in s.rounds)
    timings["score_ms"] = sum(r.score_ms for r in s.rounds)
    timings["decode_ms"] = timings["draft_ms"] + timings["score_ms"]
    timings["wall_ms"] = wall_ms
    acc, dra = s.position_counts()
    extra: dict[str, Any] = {}
    counters = getattr(s, "pipeline_counters", None)
    if callable(counters):  # the pipelined schedule (decoding.pipeline.PipelineStats)
        extra["pipeline"] = counters()
    return {
        "status": "ok",
        "tokens": list(result.tokens),
        "text": result.text,
        "new_tokens": len(result.tokens),
        "stop_reason": s.stop_reason,
        "timings": timings,
        # per round: [drafted k, accepted n, draft ms, score ms]
        "rounds": [[r.drafted, r.accepted, r.draft_ms, r.score_ms] for r in s.rounds],
        "drafted": s.drafted,
        "accepted": s.accepted,
        "alpha": s.alpha,
        "tau": s.tau,
        "accepted_hist": s.accepted_hist,
        "position_accepted": acc,
        "position_drafted": dra,
        **extra,
    }


def measure(
    backend: BenchBackend,
    request: Request,
    drafter_name: str,
    drafter: Drafter | None,
    gamma: int,
    config: BenchConfig,
    seed: int,
) -> tuple[dict[str, Any], list[int]]:
    """Run one measurement; returns (result fields, answer tokens).  Raises on failure."""
    if drafter_name in _HF_VARIANT:
        variant = _HF_VARIANT[drafter_name]
        backend.synchronize()
        t0 = time.perf_counter()
        if drafter_name == HF_GENERATE:
            tokens, ms = backend.hf_generate(request, config.max_new_tokens)
        else:
            tokens, ms = backend.hf_generate(request, config.max_new_tokens, variant=variant)
        backend.synchronize()
        wall_ms = (time.perf_counter() - t0) * 1e3
        fields = {
            "status": "ok",
            "tokens": tokens,
            "text": backend.decode_text(tokens),
            "new_tokens": len(tokens),
            "timings": {"total_ms": ms, "wall_ms": wall_ms},
        }
        return fields, tokens
    backend.synchronize()
    t0 = time.perf_counter()
    result = backend.generate(
        request,
        drafter,
        gamma=gamma,
        max_new_tokens=config.max_new_tokens,
        temperature=config.temperature,
        top_p=config.top_p,
        seed=seed,
    )
    backend.synchronize()
    wall_ms = (time.perf_counter() - t0) * 1e3
    return result_fields(result, wall_ms), list(result.tokens)
