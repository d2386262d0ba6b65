"""Deterministic train / validation / test assignment by clip (never by question)."""

from __future__ import annotations

import numpy as np

from evspec.data.manifest import SPLITS

_SPLIT_SALT = 0x5EED5  # keeps the split stream apart from the per-clip streams


def split_counts(n: int, fractions: tuple[float, float, float]) -> tuple[int, int, int]:
    """Clips per split: validation and test get ``round(n * fraction)``, at least one each
    when their fraction is positive and ``n >= 3``; train takes the rest."""
    if n < 0:
        raise ValueError(f"split_counts: n = {n} must be >= 0")
    held = []
    for f in fractions[1:]:
        k = int(round(n * f))
        if f > 0 and k == 0 and n >= 3:
            k = 1
        held.append(k)
    n_val, n_test = held
    if n_val + n_test >= n and n > 0:
        n_val, n_test = min(n_val, max(0, (n - 1) // 2)), min(n_test, max(0, (n - 1) // 2))
    return n - n_val - n_test, n_val, n_test


def assign_splits(n: int, seed: int, fractions: tuple[float, float, float]) -> list[str]:
    """The split name (``"train"``, ``"val"``, ``"test"``) of clips ``0 .. n-1``.

    A seeded permutation puts the first ``n_test`` clips in test and the next ``n_val`` in
    validation; the same ``(n, seed, fractions)`` always gives the same assignment.
    """
    n_train, n_val, n_test = split_counts(n, fractions)
    order = np.random.default_rng(np.random.SeedSequence([seed, _SPLIT_SALT])).permutation(n)
    names = [SPLITS[0]] * n
    for i in order[:n_test]:
        names[int(i)] = SPLITS[2]
    for i in order[n_test : n_test + n_val]:
        names[int(i)] = SPLITS[1]
    return names
