"""Model-free sampling and the lossless acceptance rule.

Notation (Leviathan et al., 2023): ``p`` is the target's next-token distribution, ``q``
the drafter's; a round verifies ``k`` drafted tokens ``d_1..d_k`` with ``k + 1`` target
distributions ``p_0..p_k`` (``p_i`` follows the prefix extended by ``d_1..d_i``).

* Greedy (temperature 0): accept the longest prefix with ``d_i == argmax p_{i-1}``, then
  emit ``argmax p_n``.  Output equals target-only greedy decoding exactly.
* Sampling: accept ``d_i`` with probability ``min(1, p(d_i) / q(d_i))``; at the first
  rejection emit a sample of ``norm(max(0, p - q))``; when all ``k`` pass, emit a sample
  of ``p_k``.  The emitted sequence has exactly the target's distribution.  A
  deterministic drafter has ``q`` one-hot at its proposal.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch


def validate_sampling(temperature: float, top_p: float) -> None:
    if not (temperature >= 0.0 and math.isfinite(temperature)):  # also rejects NaN
        raise ValueError(
            f"--temperature must be a finite number >= 0 (0 = greedy), got {temperature}")
    if not 0.0 < top_p <= 1.0:  # also rejects NaN
        raise ValueError(f"--top-p must be in (0, 1], got {top_p}")


def token_limit(model: Any) -> int | None:
    """How many logits ids ``model``'s tokenizer can decode, when fewer than the logits'
    width (checkpoints pad ``lm_head`` to a multiple of 64): sampling never draws the rest."""
    tokenizer = getattr(model, "tokenizer", None)
    if tokenizer is None:
        return None
    n = len(tokenizer)
    return n if n < int(model.vocab_size) else None


def logits_to_probs(
    logits: torch.Tensor, temperature: float, top_p: float = 1.0, n_ids: int | None = None
) -> torch.Tensor:
    """``logits`` ``[..., V]`` -> float32 probabilities ``[..., V]`` after temperature and
    nucleus (top-p) filtering.  ``temperature`` must be > 0 here.  ``n_ids``: only ids
    below it get mass (the ids a tokenizer has; see :func:`token_limit`)."""
    if temperature <= 0:
        raise ValueError("logits_to_probs needs temperature > 0; use argmax for greedy")

    def scale(x: torch.Tensor) -> torch.Tensor:
        out = x / temperature
        if n_ids is not None and n_ids < out.shape[-1]:
            out[..., n_ids:] = float("-inf")
        return out

    x = logits.float()
    scaled = scale(x)
    if not torch.isfinite(scaled.amax(dim=-1)).all():  # a tiny temperature overflowed
        scaled = scale(x - x.amax(dim=-1, keepdim=True))  # <= 0, the best ids at 0
    probs = torch.softmax(scaled, dim=-1)
    if top_p < 1.0:
        sorted_p, idx = torch.sort(probs, dim=-1, descending=True)
        cum = torch.cumsum(sorted_p, dim=-1)
        # drop a token when the mass strictly before it already reaches top_p
        drop = (cum - sorted_p) >= top_p
        sorted_p = sorted_p.masked_fill(drop, 0.0)
        probs = torch.zeros_like(probs).scatter_(-1, idx, sorted_p)
        probs = probs / probs.sum(dim=-1, keepdim=True)
    return probs


def sample(probs: torch.Tensor, generator: torch.Generator | None) -> int:
    """One draw from ``probs`` ``[V]``."""
    return int(torch.multinomial(probs, 1, generator=generator).item())


def select(
    logits: torch.Tensor, temperature: float, top_p: float, generator: torch.Generator | None,
    n_ids: int | None = None,
) -> int:
    """Next token from one position's ``logits`` ``[V]``: argmax when greedy, else a sample
    (of ids below ``n_ids`` only)."""
    if temperature == 0:
        return int(torch.argmax(logits).item())
    return sample(logits_to_probs(logits, temperature, top_p, n_ids), generator)


@dataclass
class Verdict:
    """``n_accepted`` leading drafts kept, then ``next_token`` from the target."""

    n_accepted: int
    next_token: int


def _pad_vocab(q: torch.Tensor, width: int) -> torch.Tensor:
    if q.shape[-1] == width:
        return q
    if q.shape[-1] > width:
        raise ValueError(f"drafter distribution has {q.shape[-1]} ids, target only {width}")
    return torch.nn.functional.pad(q, (0, width - q.shape[-1]))


def verify(
    p_logits: torch.Tensor,  # [k + 1, V] target logits
    draft: torch.Tensor,  # [k] drafted ids
    q_probs: torch.Tensor | None,  # [k, V'] drafter probabilities (V' <= V), None = one-hot
    *,
    temperature: float,
    top_p: float = 1.0,
    generator: torch.Generator | None = None,
    n_ids: int | None = None,
) -> Verdict:
    """Apply the acceptance rule to one round (``p`` over ids below ``n_ids`` when sampling)."""
    k = int(draft.numel())
    if p_logits.shape[0] != k + 1:
        raise ValueError(f"need {k + 1} target distributions for {k} drafts, got {p_logits.shape[0]}")
    draft = draft.to(p_logits.device).long()
    if temperature == 0:
        best = torch.argmax(p_logits, dim=-1)  # [k + 1]
        n_t = torch.cumprod((best[:k] == draft).long(), dim=0).sum()  # accepted drafts, on the device
        n, nxt = torch.stack([n_t, best[n_t]]).tolist()  # the verdict's one host sync
        return Verdict(n, nxt)

    p = logits_to_probs(p_logits, temperature, top_p, n_ids)  # [k + 1, V]
    rows = torch.arange(k, device=p.device)
    p_d = p[rows, draft]  # [k] p_i(d_i)
    if q_probs is None:
        q = None
        q_d = torch.ones_like(p_d)
    else:
        q = _pad_vocab(q_probs.to(p.device).float(), p.shape[-1])  # [k, V]
        q_d = q[rows, draft]
    # r_i ~ U(0,1); accept while r_i < p/q  (q_d > 0 because d_i was drawn from q)
    r = torch.rand(k, generator=generator, device=p.device) if k else p_d
    ok = (r * q_d < p_d).int()
    n = int(torch.cumprod(ok, dim=0).sum().item()) if k else 0
    if n == k:
        return Verdict(n, sample(p[k], generator))
    # first rejection at position n: resample from norm(max(0, p_n - q_n))
    q_n = torch.zeros_like(p[n]) if q is None else q[n]
    if q is None:
        q_n[draft[n]] = 1.0
    residual = torch.clamp(p[n] - q_n, min=0.0)
    mass = residual.sum()
    if mass <= 0:  # p_n == q_n numerically: the rejection had probability ~0; fall back to p
        residual, mass = p[n], p[n].sum()
    return Verdict(n, sample(residual / mass, generator))
