"""Test doubles for the tree and cascade tests: a context-dependent (Markov) stub model whose
next-token distribution depends on the last token, and a chi-squared helper."""

from __future__ import annotations

import torch

from evspec.models.state import ScoreOutput, TargetState


class MarkovLM:
    """``P[a, b]`` = probability that b follows a.  Satisfies the ``Target`` protocol (and
    so can verify, draft, or be a cascade's middle model).  The KV "cache" is the list of
    tokens fed; prefill feeds token 0."""

    def __init__(self, P: torch.Tensor, eos: int = -1, max_context: int = 10_000):
        self.P = P
        self.logP = P.log()  # [V, V]
        self.vocab_size = P.shape[0]
        self.eos_token_id = eos
        self.max_context = max_context
        self.device = torch.device("cpu")
        self.tokenizer = None

    def _logits(self, toks) -> torch.Tensor:
        return self.logP[torch.as_tensor(toks, dtype=torch.long)]  # [T, V]

    def prefill(self, request, *, return_hidden=False):
        return TargetState(cache=[0], length=1, last_logits=self._logits([0])[0], prompt_ids=torch.tensor([0]))

    def score(self, state, tokens, *, return_hidden=False):
        toks = tokens.reshape(-1).tolist()
        state.cache.extend(toks)
        state.length += len(toks)
        return ScoreOutput(logits=self._logits(toks))

    def rollback(self, state, n):
        if n:
            del state.cache[-n:]
        state.length -= n

    # tree hooks (evspec.decoding.tree uses them instead of HF tree attention)
    def score_tree(self, state, tokens, parents, *, n_cached=0):
        toks = tokens.reshape(-1).tolist()
        state.cache.extend(toks[n_cached:])  # tentative nodes after the linear tokens
        return ScoreOutput(logits=self._logits(toks[n_cached:]))

    def keep_path(self, state, n_tree, path):
        nodes = state.cache[len(state.cache) - n_tree :]
        del state.cache[len(state.cache) - n_tree :]
        state.cache.extend(nodes[i] for i in path)
        state.length += len(path)

    def decode_text(self, ids):
        return ""


def random_markov(v: int, seed: int, sharp: float = 1.0) -> torch.Tensor:
    """A random row-stochastic ``[v, v]`` matrix (softmax of Gaussian logits * sharp)."""
    gen = torch.Generator().manual_seed(seed)
    return torch.softmax(torch.randn(v, v, generator=gen) * sharp, dim=-1)


def chi2_pvalue(counts: torch.Tensor, p: torch.Tensor) -> float:
    """Pearson chi^2 goodness of fit of ``counts`` to ``p`` (any shape, flattened); cells
    with p = 0 must be empty."""
    counts, p = counts.flatten().double(), p.flatten().double()
    n = counts.sum()
    support = p > 0
    assert counts[~support].sum() == 0, "mass outside the target's support"
    exp = n * p[support]
    stat = ((counts[support] - exp) ** 2 / exp).sum()
    df = int(support.sum()) - 1
    return float(torch.special.gammaincc(torch.tensor(df / 2.0, dtype=torch.float64), stat / 2))
