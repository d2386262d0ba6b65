"""Token trees from a draft head (``event-head`` / ``target-head``): EAGLE-style tree
drafting for ``decoding.tree``.

The head drafts node by node like the chain drafter (``decoding.drafters.head``): a node
``u`` with token ``x_u`` and parent ``p`` is fed the pair ``(f_p, x_u)`` -- the parent's
feature stands in for the target state that would have predicted ``x_u`` -- and its output
``f_u`` gives the children's distribution through the target's ``lm_head``.  One level is
one :meth:`~evspec.modules.head.DraftHead.extend_tree` call: the level's nodes share the
position ``committed + depth - 1`` and each sees the committed answer, its ancestors and
itself.  After verification the tree rows are dropped and the target's own states along
the accepted path (root included) are queued, exactly as the chain drafter re-synchronises.
With every branching 1 the tree is the chain: the same drafts (tested).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from evspec.decoding.drafters.base import DrafterError
from evspec.decoding.drafters.head import HeadDrafter
from evspec.decoding.tree_draft import tree_children
from evspec.decoding.tree_shape import DraftTree, TreeShape
from evspec.models.request import Request
from evspec.models.state import TargetState


class HeadTreeDrafter:
    """Grows token trees with a trained head (built from a :class:`HeadDrafter`, whose
    head, event memory and target ``embed``/``lm_head`` it uses, always on the eager path)."""

    needs_target_hidden = True

    def __init__(self, drafter: HeadDrafter) -> None:
        self.base = drafter
        self.head = drafter.head
        self.name = drafter.name
        self.top_p = drafter.top_p
        self.timings: dict[str, float] = {}
        self._cache = None
        self._pending: list[tuple[torch.Tensor, int]] = []
        self._committed = 0

    def begin(self, request: Request, target, first_token: int, state: TargetState | None = None) -> None:
        if state is None or state.last_hidden is None:
            raise DrafterError(f"tree drafter {self.name!r} needs the target's hidden states (prefill return_hidden)")
        self.base.timings = {}
        mem_kv = self.base._memory_kv(request) if self.head.config.has_memory else None
        self.timings = dict(self.base.timings)
        with torch.inference_mode():
            self._cache = self.head.new_cache(memory_kv=mem_kv)
        self._pending = [(state.last_hidden, int(first_token))]
        self._committed = 0

    def room(self) -> int:
        """Tree depth the head's cache still holds."""
        assert self._cache is not None
        return self.head.config.max_positions - self._cache.length - len(self._pending)

    @torch.inference_mode()
    def grow(self, shape: TreeShape, temperature: float, gen: torch.Generator | None) -> DraftTree:
        cache = self._cache
        if cache is None:
            raise RuntimeError("grow() before begin()")
        hidden = torch.stack([h for h, _ in self._pending])  # [P, H]
        f_root = self.head.extend(cache, hidden, self.base._emb([x for _, x in self._pending]))[-1]  # [H]
        self._committed = cache.length
        self._pending = []
        tree = DraftTree(tokens=[-1], parents=[-1], q=[None])  # root token set by the caller
        level, feats = [0], [f_root]
        for d, b in enumerate(shape.branching):
            new: list[int] = []
            inputs: list[torch.Tensor] = []  # the parent's feature of each new node
            for u, f in zip(level, feats):
                kids, q = tree_children(self.base._logits(f), b, temperature, self.top_p, gen)
                tree.q[u] = q
                for t in kids:
                    tree.tokens.append(int(t))
                    tree.parents.append(u)
                    tree.q.append(None)
                    new.append(len(tree.tokens) - 1)
                    inputs.append(f)
            level = new
            if d + 1 < shape.depth and new:  # feed this level: the next level's features
                feats = list(self._feed_level(tree, new, torch.stack(inputs), d))
        return tree

    def _feed_level(self, tree: DraftTree, nodes: list[int], parent_feats: torch.Tensor, depth: int) -> torch.Tensor:
        """Rows for ``nodes`` (depth ``depth + 1``); node ``n`` lives at row ``committed + n - 1``."""
        cache, base = self._cache, self._committed
        start = cache.length
        mask = torch.zeros(len(nodes), start + len(nodes), dtype=torch.bool)
        mask[:, :base] = True
        for i, n in enumerate(nodes):
            u = n
            while u > 0:  # the node and its ancestors (the root's row is the committed answer)
                mask[i, base + u - 1] = True
                u = tree.parents[u]
        positions = torch.full((len(nodes),), base + depth, dtype=torch.long)
        embeds = self.base._emb([tree.tokens[n] for n in nodes])
        return self.head.extend_tree(cache, parent_feats, embeds, positions, mask)

    def accept(self, tree: DraftTree, path: Sequence[int], next_token: int, target_hidden: torch.Tensor | None = None) -> None:
        """Drop the tree rows; queue the target's states along root + ``path`` with the
        accepted tokens and ``next_token``."""
        if self._cache is None:
            raise RuntimeError("accept() before begin()")
        if target_hidden is None or target_hidden.shape[0] != len(path) + 1:
            raise ValueError(f"tree drafter {self.name!r} needs target_hidden [len(path) + 1, H]")
        self._cache.truncate(self._committed)
        tokens = [tree.tokens[i] for i in path] + [int(next_token)]
        self._pending.extend(zip(target_hidden, tokens))

    def skip(self, next_token: int, hidden: torch.Tensor | None = None) -> None:
        """A round without a tree: the root's state and the target's token wait to be fed."""
        if hidden is None:
            raise ValueError(f"tree drafter {self.name!r} needs the root's hidden state")
        self._pending.append((hidden.reshape(-1), int(next_token)))

    def end(self) -> None:
        self._cache, self._pending = None, []
