"""Training objectives that raise the acceptance the engine measures.

Greedy speculative decoding accepts a draft exactly when it is the target's argmax, and
sampled decoding accepts with probability ``sum_x min(p(x), q(x)) = 1 - TV(p, q)``.  So the
objectives are (Leviathan et al. notation: ``p`` target, ``q`` drafter):

* ``kl``: KL(p || q) on the target's stored top-K (renormalised): pulls q toward p, which
  lowers TV and puts q's argmax on p's;
* ``ce``: cross-entropy on the target's own tokens ``x_j`` (its greedy answer): the greedy
  acceptance event itself;
* auxiliaries only: ``feature`` (smooth-L1 to the target's hidden state, what lets a head
  feed its own output back as the next hidden input) and ``cosine``.

All functions take flattened positions ``N`` (callers select the valid ones).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class LossWeights:
    """Weights of the terms; ``decay``: weight ``decay**s`` of training-time-test step /
    expander slot ``s`` (later drafts matter less: they are reached less often)."""

    kl: float = 1.0
    ce: float = 1.0
    feature: float = 0.0
    cosine: float = 0.0
    decay: float = 0.8

    def __post_init__(self) -> None:
        for name in ("kl", "ce", "feature", "cosine"):
            v = getattr(self, name)
            if not v >= 0:
                raise ValueError(f"LossWeights.{name} must be >= 0, got {v}")
        if self.kl == 0 and self.ce == 0:
            raise ValueError(
                "LossWeights: kl and ce are both 0; acceptance needs a token objective "
                "(cosine/feature are auxiliaries only)"
            )
        if not 0 < self.decay <= 1:
            raise ValueError(f"LossWeights.decay must be in (0, 1], got {self.decay}")

    def to_dict(self) -> dict:
        return asdict(self)


def topk_kl(
    logits: torch.Tensor,  # [N, V] drafter logits (q)
    topk_ids: torch.Tensor,  # [N, K] the target's top-K ids
    topk_logp: torch.Tensor,  # [N, K] their target log-probabilities
    vocab_limit: int | None = None,
) -> torch.Tensor:
    """KL(p || q) per position ``[N]`` with p = the target's top-K renormalised (ids at or
    above ``vocab_limit``, which the drafter cannot propose, are dropped first)."""
    logp = topk_logp.float()
    ids = topk_ids
    if vocab_limit is not None:
        outside = ids >= vocab_limit
        logp = logp.masked_fill(outside, float("-inf"))
        ids = ids.masked_fill(outside, 0)
    p_log = torch.log_softmax(logp, dim=-1)  # [N, K]
    p = p_log.exp()
    q_log = torch.log_softmax(logits.float(), dim=-1).gather(-1, ids)  # [N, K]
    terms = torch.where(p > 0, p * (p_log - q_log), torch.zeros_like(p))
    return terms.sum(-1)


def token_ce(logits: torch.Tensor, targets: torch.Tensor, vocab_limit: int | None = None) -> torch.Tensor:
    """Cross-entropy per position ``[N]`` on ``targets`` ``[N]`` (0 where the target id is
    outside the drafter's vocabulary)."""
    t = targets.clone()
    outside = t >= (vocab_limit if vocab_limit is not None else logits.shape[-1])
    t[outside] = 0
    ce = F.cross_entropy(logits.float(), t, reduction="none")
    return ce.masked_fill(outside, 0.0)


def feature_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Smooth-L1 per position ``[N]`` between features ``[N, H]`` (EAGLE's regression)."""
    return F.smooth_l1_loss(pred.float(), target.float(), reduction="none").mean(-1)


def cosine_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``1 - cos`` per position ``[N]``."""
    return 1.0 - F.cosine_similarity(pred.float(), target.float(), dim=-1)


def token_objective(
    weights: LossWeights,
    logits: torch.Tensor,  # [N, V]
    targets: torch.Tensor,  # [N]
    topk_ids: torch.Tensor,  # [N, K]
    topk_logp: torch.Tensor,  # [N, K]
    *,
    features: torch.Tensor | None = None,  # [N, H] predicted target-space features
    target_features: torch.Tensor | None = None,  # [N, H]
    vocab_limit: int | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Weighted mean over positions of the terms; returns the loss and per-term sums plus
    ``correct`` (argmax == target) and ``n`` for metrics."""
    n = int(targets.numel())
    if n == 0:
        zero = logits.sum() * 0.0
        return zero, {"n": 0, "correct": 0}
    total = torch.zeros(n, device=logits.device)
    stats: dict[str, float] = {"n": n}
    if weights.kl:
        kl = topk_kl(logits, topk_ids, topk_logp, vocab_limit)
        total = total + weights.kl * kl
        stats["kl"] = float(kl.detach().sum())
    if weights.ce:
        ce = token_ce(logits, targets, vocab_limit)
        total = total + weights.ce * ce
        stats["ce"] = float(ce.detach().sum())
    if features is not None and target_features is not None:
        if weights.feature:
            fl = feature_loss(features, target_features)
            total = total + weights.feature * fl
            stats["feature"] = float(fl.detach().sum())
        if weights.cosine:
            cl = cosine_loss(features, target_features)
            total = total + weights.cosine * cl
            stats["cosine"] = float(cl.detach().sum())
    lim = logits.shape[-1] if vocab_limit is None else vocab_limit
    stats["correct"] = int((logits[:, :lim].argmax(-1) == targets).sum())
    return total.mean(), stats
