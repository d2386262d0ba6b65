"""Acceptance control for token trees (:class:`TreeControl`, DESIGN.md §5): timing runs
at random-weight scale with a chosen acceptance per child rank.  Used by
``decoding.tree.generate_tree`` with ``forced_reference``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from evspec.decoding.tree_shape import DraftTree

@dataclass
class TreeControl:
    """Acceptance-controlled trees (DESIGN.md §5): after the drafter's real compute, each
    node on the reference path puts the reference token at child rank r with probability
    ``rank_alpha[r]`` (at most one rank; none with the remaining probability); the other
    children get wrong ids.  Use with ``forced_reference``; label results
    "acceptance-controlled"."""

    rank_alpha: tuple[float, ...]
    vocab_size: int
    seed: int = 0

    def __post_init__(self) -> None:
        if any(a < 0 for a in self.rank_alpha) or sum(self.rank_alpha) > 1 + 1e-9:
            raise ValueError(f"TreeControl.rank_alpha must be >= 0 and sum to <= 1, got {self.rank_alpha}")
        self._rng = torch.Generator().manual_seed(self.seed)

    def apply(self, tree: DraftTree, reference: list[int], position: int) -> None:
        """Rewrite ``tree`` in place; ``reference[position]`` is the root's token."""
        on_path = {0: position}  # node -> answer index of its token
        for c in range(1, len(tree.tokens)):
            par = tree.parents[c]
            if par not in on_path:
                continue
            j = on_path[par] + 1
            if j >= len(reference):
                continue
            siblings = [s for s in range(1, len(tree.tokens)) if tree.parents[s] == par]
            if c != siblings[0]:
                continue  # decide once per parent, at its first child
            u = float(torch.rand((), generator=self._rng))
            rank, acc = None, 0.0
            for r, a in enumerate(self.rank_alpha[: len(siblings)]):
                acc += a
                if u < acc:
                    rank = r
                    break
            for r, s in enumerate(siblings):
                if r == rank:
                    tree.tokens[s] = reference[j]
                    on_path[s] = j
                else:  # any id but the reference's
                    offset = 1 + int(torch.randint(self.vocab_size - 1, (), generator=self._rng))
                    tree.tokens[s] = (reference[j] + offset) % self.vocab_size

