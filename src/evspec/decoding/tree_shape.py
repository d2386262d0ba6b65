"""The token trees of tree speculative decoding (``decoding.tree``): their fixed shape
(:class:`TreeShape`, children per node at each depth) and one drafted tree
(:class:`DraftTree`, nodes in breadth-first order with the drafter's distributions).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from evspec.models import tree_attention as ta

MAX_NODES = 512


@dataclass(frozen=True)
class TreeShape:
    """``branching[d]`` = children per node at depth d + 1 (so ``len`` = tree depth)."""

    branching: tuple[int, ...]

    def __post_init__(self) -> None:
        if not self.branching or any(not isinstance(b, int) or b < 1 for b in self.branching):
            raise ValueError(f"TreeShape.branching must be a non-empty tuple of ints >= 1, got {self.branching!r}")
        if self.nodes > MAX_NODES:
            raise ValueError(
                f"TreeShape{self.branching} has {self.nodes} nodes (> {MAX_NODES}); lower the branching or depth"
            )

    @classmethod
    def uniform(cls, depth: int, branch: int) -> TreeShape:
        """``branch`` children per node at every one of ``depth`` levels."""
        if depth < 1 or branch < 1:
            raise ValueError(f"tree depth and branch must be >= 1, got depth={depth}, branch={branch}")
        return cls((branch,) * depth)

    @property
    def depth(self) -> int:
        return len(self.branching)

    @property
    def nodes(self) -> int:
        """Nodes below the root."""
        total, width = 0, 1
        for b in self.branching:
            width *= b
            total += width
        return total

    def truncated(self, depth: int) -> TreeShape | None:
        return TreeShape(self.branching[:depth]) if depth >= 1 else None


@dataclass
class DraftTree:
    """Nodes in breadth-first order; node 0 is the root (the pending token).

    ``q[i]``: the drafter's (filtered) distribution ``[V']`` at node i that its children
    were drawn from (sampling only; None for leaves and in greedy mode).
    """

    tokens: list[int]
    parents: list[int]
    q: list[torch.Tensor | None] = field(default_factory=list)

    def children(self, i: int) -> list[int]:
        return [c for c, p in enumerate(self.parents) if p == i]

    @property
    def depths(self) -> list[int]:
        return ta.depths(self.parents)

