"""Figures of a recorded run: per (drafter, γ) speedups, α, τ, c, stage times, and the
speedup the cost model predicts from the measured α and c (``bench.theory``).

Speedups are paired per request against a baseline (evspec target-only, and HF
``generate``) and given both as the *ratio of means* (total baseline time / total time:
what a user waiting for all answers sees) and the *mean of ratios* (the typical request),
with the ratios' standard deviation and a bootstrap 95 % interval of the ratio of means.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

from evspec.bench import theory
from evspec.bench.config import HF_BASELINES, HF_GENERATE, TARGET_ONLY

HF_NAMES = tuple(HF_BASELINES.values())

#: stage breakdown keys, in pipeline order (``other`` = total − the rest)
STAGES = (
    "target_preprocess_ms", "target_vision_ms", "target_prefill_ms",
    "draft_preprocess_ms", "draft_vision_ms", "draft_prefill_ms", "draft_ms", "score_ms",
)


@dataclass
class Speedup:
    """Baseline time / measured time over ``n`` requests measured by both: the ratio of
    the summed times with its bootstrap 95 % interval (``ci95``), and the paired
    per-request ratios' mean, sd, median and the mean's bootstrap 95 % interval
    (``mor_ci95``: the interval is over requests, resampled as pairs)."""

    n: int
    ratio_of_means: float
    mean_of_ratios: float
    std_of_ratios: float
    ci95: tuple[float, float]
    median_of_ratios: float | None = None
    mor_ci95: tuple[float, float] | None = None


@dataclass
class ConfigSummary:
    """Everything the report prints for one (drafter, γ).  None = not measurable (no
    rounds, no baseline, a failed reference ...)."""

    drafter: str
    gamma: int
    kind: str
    n_ok: int
    n_failed: int
    mean_total_ms: float | None = None
    mean_new_tokens: float | None = None
    ms_per_token: float | None = None
    vs_target: Speedup | None = None
    vs_hf: Speedup | None = None
    decode_speedup: float | None = None  # measured, decode phase only (what theory models)
    alpha: float | None = None  # accepted / drafted
    alpha_model: float | None = None  # the cost model's α (maximum likelihood)
    tau: float | None = None  # tokens per target pass, measured
    mean_drafted: float | None = None  # γ̄: tokens drafted per round (<= γ)
    c: float | None = None  # draft ms per token / score ms per pass
    verify_cost: float | None = None  # score ms per pass / target-only ms per step
    predicted: float | None = None  # Leviathan: τ(α, γ) / (γ c + 1), per-round k for γ
    predicted_v: float | None = None  # τ / (v·(γ̄ c + 1)): the round cost in target steps
    best_gamma: int | None = None  # the γ theory would pick for this α, c
    match_rate: float | None = None  # fraction of answers identical to target-only
    prefix_match: float | None = None
    stages: dict[str, float] = field(default_factory=dict)  # mean ms per stage
    accepted_hist: list[int] = field(default_factory=list)
    position_alpha: list[float | None] = field(default_factory=list)  # P(accept i | reached i)
    errors: dict[str, int] = field(default_factory=dict)  # error type -> count


def _mean(xs: list[float]) -> float | None:
    return float(np.mean(xs)) if xs else None


def paired_speedup(base_ms: list[float], cfg_ms: list[float], *, resamples: int = 2000, seed: int = 0) -> Speedup | None:
    """Speedup of paired times (same requests, same order); None when nothing is paired."""
    b = np.asarray(base_ms, dtype=np.float64)
    m = np.asarray(cfg_ms, dtype=np.float64)
    if b.shape != m.shape:
        raise ValueError(f"paired times differ in length: {b.shape} vs {m.shape}")
    keep = (b > 0) & (m > 0)
    b, m = b[keep], m[keep]
    if b.size == 0:
        return None
    ratios = b / m
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, b.size, size=(resamples, b.size))  # [R, n] bootstrap resamples
    boot = b[idx].sum(axis=1) / m[idx].sum(axis=1)
    lo, hi = np.quantile(boot, [0.025, 0.975])
    mor_lo, mor_hi = np.quantile(ratios[idx].mean(axis=1), [0.025, 0.975])
    return Speedup(
        n=int(b.size),
        ratio_of_means=float(b.sum() / m.sum()),
        mean_of_ratios=float(ratios.mean()),
        std_of_ratios=float(ratios.std(ddof=1)) if b.size > 1 else 0.0,
        ci95=(float(lo), float(hi)),
        median_of_ratios=float(np.median(ratios)),
        mor_ci95=(float(mor_lo), float(mor_hi)),
    )


def position_alpha(rounds: list[list[float]]) -> list[float | None]:
    """Conditional acceptance by draft position: P(draft i accepted | drafts < i accepted).

    ``rounds`` rows are ``[drafted, accepted, ...]``.  Under the cost model every entry is α.
    """
    width = int(max((r[0] for r in rounds), default=0))
    reached, accepted = [0] * width, [0] * width
    for r in rounds:
        k, n = int(r[0]), int(r[1])
        for i in range(min(n + 1, k)):  # positions 0..n tried (n+1 only if drafted)
            reached[i] += 1
            accepted[i] += i < n
    return [a / t if t else None for a, t in zip(accepted, reached)]


def predicted_with_verify_cost(alpha: float, drafted_per_round: list[int], c: float, v: float) -> float:
    """Decode speedup over target-only with the measured verification cost:
    τ / (v·(γ̄·c + 1)).

    ``c`` is measured per *score pass* (draft ms per token / score ms per pass) and ``v`` =
    score ms per pass / target-only ms per step, so a round costs γ̄·c + 1 score passes =
    v·(γ̄·c + 1) target steps.  (τ / (γ̄·c + v) would mix the two units.)  In the cost
    model's terms: ``speedup_for_rounds`` with c expressed per target step (c·v) and v.
    """
    return theory.speedup_for_rounds(alpha, drafted_per_round, c * v, v)


def _tokens_after_first(rec: dict) -> int:
    return max(int(rec.get("new_tokens", 0)) - 1, 0)


def summarize(records: list[dict], *, max_gamma: int = 16) -> list[ConfigSummary]:
    """One summary per (drafter, γ), baselines first (target-only, HF), then drafters."""
    groups: dict[tuple[str, int], list[dict]] = defaultdict(list)
    for rec in records:
        groups[(rec["drafter"], int(rec["gamma"]))].append(rec)

    def ok_by_request(key: tuple[str, int]) -> dict[str, dict]:
        return {r["request_id"]: r for r in groups.get(key, []) if r.get("status") == "ok"}

    target = ok_by_request((TARGET_ONLY, 0))
    hf = ok_by_request((HF_GENERATE, 0))

    def order(key: tuple[str, int]) -> tuple:
        name, gamma = key
        rank = 0 if name == TARGET_ONLY else 1 if name in HF_NAMES else 2
        return (rank, name if rank else "", gamma)

    out = []
    for key in sorted(groups, key=order):
        recs = groups[key]
        ok = [r for r in recs if r.get("status") == "ok"]
        s = ConfigSummary(
            drafter=key[0], gamma=key[1], kind=recs[0].get("kind", ""),
            n_ok=len(ok), n_failed=len(recs) - len(ok),
        )
        for r in recs:
            if r.get("status") != "ok":
                s.errors[r.get("error_type", "Error")] = s.errors.get(r.get("error_type", "Error"), 0) + 1
        if ok:
            _fill(s, ok, target, hf, max_gamma)
        out.append(s)
    return out


def _check(record: dict, target: dict[str, dict]) -> dict:
    """The record's lossless check; made here from the answer tokens when the record was
    written before its request's target-only answer existed (a run stopped mid-request)."""
    if record.get("matches_target") is not None:
        return {"matches_target": record["matches_target"],
                "prefix_match": record.get("prefix_match")}
    from evspec.bench.measure import compare

    ref = target.get(record["request_id"])
    if ref is None or "tokens" not in ref or "tokens" not in record:
        return {"matches_target": None, "prefix_match": None}
    return compare(record["tokens"], ref["tokens"])


def _fill(s: ConfigSummary, ok: list[dict], target: dict[str, dict], hf: dict[str, dict], max_gamma: int) -> None:
    totals = [r["timings"]["total_ms"] for r in ok]
    s.mean_total_ms = _mean(totals)
    s.mean_new_tokens = _mean([r["new_tokens"] for r in ok])
    n_tok = sum(r["new_tokens"] for r in ok)
    s.ms_per_token = sum(totals) / n_tok if n_tok else None

    for base_name, base, attr in ((TARGET_ONLY, target, "vs_target"), (HF_GENERATE, hf, "vs_hf")):
        if s.drafter == base_name:
            continue  # a baseline against itself is 1 by definition
        pairs = [(base[r["request_id"]], r) for r in ok if r["request_id"] in base]
        base_ms = [b["timings"]["total_ms"] for b, _ in pairs]
        setattr(s, attr, paired_speedup(base_ms, [r["timings"]["total_ms"] for _, r in pairs]))

    checks = [_check(r, target) for r in ok] if s.kind != "target" else []
    checked = [c for c in checks if c["matches_target"] is not None]
    if checked:
        s.match_rate = sum(bool(c["matches_target"]) for c in checked) / len(checked)
        s.prefix_match = _mean([c["prefix_match"] for c in checked])

    stage_means = {k: _mean([r["timings"].get(k, 0.0) for r in ok]) or 0.0 for k in STAGES}
    stage_means["other_ms"] = (s.mean_total_ms or 0.0) - sum(stage_means.values())
    s.stages = stage_means if s.kind != "hf" else {"total_ms": s.mean_total_ms or 0.0}

    rounds = [row for r in ok for row in r.get("rounds", [])]
    if s.kind != "spec" or not rounds:
        return
    drafted = sum(int(row[0]) for row in rounds)
    accepted = sum(int(row[1]) for row in rounds)
    s.alpha = accepted / drafted if drafted else None
    s.alpha_model = theory.alpha_from_rounds((int(row[0]), int(row[1])) for row in rounds)
    s.tau = (accepted + len(rounds)) / len(rounds)
    s.mean_drafted = drafted / len(rounds)
    s.c = theory.measured_c(sum(row[2] for row in rounds), drafted, sum(row[3] for row in rounds), len(rounds))
    width = int(max(row[0] for row in rounds))
    hist = [0] * (width + 1)
    for row in rounds:
        hist[int(row[1])] += 1
    s.accepted_hist = hist
    s.position_alpha = position_alpha(rounds)

    # The target-only baseline on the same requests: its per-step time and decode speed.
    paired = [(target[r["request_id"]], r) for r in ok if r["request_id"] in target]
    if paired:
        t_rounds = [row for b, _ in paired for row in b.get("rounds", [])]
        step_ms = sum(row[3] for row in t_rounds) / len(t_rounds) if t_rounds else 0.0
        score_per_pass = sum(row[3] for row in rounds) / len(rounds)
        s.verify_cost = score_per_pass / step_ms if step_ms > 0 else None
        base_tok = sum(_tokens_after_first(b) for b, _ in paired)
        cfg_tok = sum(_tokens_after_first(r) for _, r in paired)
        base_dec = sum(b["timings"]["decode_ms"] for b, _ in paired)
        cfg_dec = sum(r["timings"]["decode_ms"] for _, r in paired)
        if base_tok and cfg_tok and base_dec > 0 and cfg_dec > 0:
            s.decode_speedup = (base_dec / base_tok) / (cfg_dec / cfg_tok)

    if s.alpha_model is not None and s.c is not None:
        ks = [int(row[0]) for row in rounds]  # drafted per round (<= γ)
        s.predicted = theory.speedup_for_rounds(s.alpha_model, ks, s.c)
        s.best_gamma = theory.best_gamma(s.alpha_model, s.c, max_gamma)
        if s.verify_cost is not None:
            s.predicted_v = predicted_with_verify_cost(s.alpha_model, ks, s.c, s.verify_cost)
