"""Growing token trees with a draft model (:class:`TreeDrafter`), for tree speculative
decoding (``decoding.tree``): depth 1 from the drafter's logits after the pending tokens,
each further depth from one tree-attention pass; greedy children are the top-b tokens of
q, sampled children b draws from q without replacement (the order ``verify_tree``
assumes).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from evspec.decoding.drafters.base import DrafterError
from evspec.decoding.protocols import Target
from evspec.decoding.sampling import logits_to_probs, sample
from evspec.decoding.tree_shape import DraftTree, TreeShape
from evspec.models import tree_attention as ta
from evspec.models.request import Request
from evspec.models.state import TargetState

def tree_children(
    logits: torch.Tensor, b: int, temperature: float, top_p: float, gen: torch.Generator | None
) -> tuple[list[int], torch.Tensor | None]:
    """``b`` children from one node's logits ``[V]``: the top-b (greedy), or ``b`` draws from
    q without replacement, in draw order (what ``verify_tree``'s q_i assume); returns the
    children and q (None when greedy)."""
    if temperature == 0:
        return torch.topk(logits, min(b, logits.numel())).indices.tolist(), None
    q = logits_to_probs(logits, temperature, top_p)  # [V']
    rest, kids = q.clone(), []
    for _ in range(min(b, int((q > 0).sum()))):  # sequential draws without replacement
        x = sample(rest / rest.sum(), gen)
        kids.append(x)
        rest[x] = 0.0
    return kids, q


class TreeDrafter:
    """Grows token trees with a draft model (the ``Target`` protocol on the dynamic cache),
    re-synchronised after every round like :class:`~evspec.decoding.drafters.model.ModelDrafter`:
    its KV holds ``prefix + accepted`` and ``pending`` the target's tokens not yet fed."""

    def __init__(self, model: Target, *, top_p: float = 1.0) -> None:
        self.model = model
        self.top_p = top_p
        self.timings: dict[str, float] = {}
        self._state: TargetState | None = None
        self._pending: list[int] = []
        self._shared = 0
        self._fed = 0  # tree nodes (depths 1 .. depth-1) in the drafter's cache

    needs_target_hidden = False

    def begin(self, request: Request, target: Target, first_token: int, state: TargetState | None = None) -> None:
        from evspec.decoding.drafters.model import ModelDrafter

        self._shared = ModelDrafter(self.model)._check_vocab(target)
        try:
            self._state = self.model.prefill(request)
        except ValueError as exc:
            raise DrafterError(f"tree drafter cannot prefill this request: {exc}") from exc
        self.timings = {k: self._state.timings.get(k, 0.0) for k in ("preprocess_ms", "vision_ms", "prefill_ms")}
        self._pending = [first_token]

    def _children(self, logits: torch.Tensor, b: int, temperature: float, gen) -> tuple[list[int], torch.Tensor | None]:
        return tree_children(logits[: self._shared], b, temperature, self.top_p, gen)  # ids the target shares

    def room(self) -> int:
        """Tree depth the drafter's context still holds."""
        assert self._state is not None
        return self.model.max_context - self._state.length - 1

    def skip(self, next_token: int, hidden: torch.Tensor | None = None) -> None:
        """A round without a tree (no room): the target's token waits to be fed."""
        self._pending.append(next_token)

    def grow(self, shape: TreeShape, temperature: float, gen: torch.Generator | None) -> DraftTree:
        state = self._state
        if state is None:
            raise RuntimeError("grow() before begin()")
        feed = torch.tensor([t if t < self._shared else 0 for t in self._pending], dtype=torch.long)
        root_logits = self.model.score(state, feed).logits[-1]  # [V]
        self._pending = []
        tree = DraftTree(tokens=[-1], parents=[-1], q=[None])  # root token set by the caller
        level = [0]  # node ids at the current depth
        level_logits = [root_logits]
        self._fed = 0
        for d, b in enumerate(shape.branching):
            new: list[int] = []
            for u, logits in zip(level, level_logits):
                toks, q = self._children(logits, b, temperature, gen)
                tree.q[u] = q
                for t in toks:
                    tree.tokens.append(t)
                    tree.parents.append(u)
                    tree.q.append(None)
                    new.append(len(tree.tokens) - 1)
            level = new
            if d + 1 < shape.depth:  # feed this level to get the next level's logits
                d_tokens = torch.tensor(tree.tokens[1:], dtype=torch.long)  # drafter nodes = tree nodes - root
                d_parents = [p - 1 for p in tree.parents[1:]]  # root's children -> -1
                out = ta.score_tree(self.model, state, d_tokens, d_parents, n_cached=self._fed)
                self._fed = len(d_tokens)
                level_logits = list(out.logits[-len(level):])
        return tree

    def accept(self, tree: DraftTree, path: Sequence[int], next_token: int,
               target_hidden: torch.Tensor | None = None) -> None:
        """Keep the accepted ``path`` (tree node ids) in the drafter's cache; queue the rest
        (``target_hidden`` is unused: a draft model re-reads its own states)."""
        state = self._state
        assert state is not None
        fed_path = [i - 1 for i in path if i - 1 < self._fed]  # leaves were never fed
        ta.keep_path(self.model, state, self._fed, fed_path)
        self._pending = [tree.tokens[i] for i in path[len(fed_path):]] + [next_token]
        self._fed = 0

    def end(self) -> None:
        self._state, self._pending, self._fed = None, [], 0

