"""Tree speculative decoding: the drafter proposes a token *tree*, the target scores all of
its nodes in one pass (``evspec.models.tree_attention``), the longest accepted path is kept.

Notation as in ``decoding.sampling``: ``p`` target, ``q`` drafter distributions.  The tree
shape is fixed by ``branching`` (children per node at each depth, e.g. ``(3, 2, 1)``);
node 0 is the root, the pending token.

* Drafting (:class:`TreeDrafter`, any model with prefill/score/rollback on the dynamic
  cache): depth 1 comes from the drafter's logits after the pending tokens (one linear
  pass), depth ℓ + 1 from one tree-attention pass over the depth-ℓ nodes.  Greedy: the
  children are the top-b tokens of q.  Sampling: b tokens drawn from q *without
  replacement* (fewer when q's support is smaller).
* Verification (:func:`verify_tree`, model-free).  Greedy: walk from the root, following
  the child equal to the target's argmax; stop at the first node without such a child and
  emit that argmax -- exactly target-only greedy decoding.  Sampling: recursive rejection
  sampling over the children, in draw order (SpecInfer's multi-draft rule, here in its
  without-replacement form): with ``p_1 = p`` and ``q_1 = q``, accept child x_i with
  probability ``min(1, p_i(x_i) / q_i(x_i))``; on rejection
  ``p_{i+1} = norm(max(0, p_i − q_i))`` and ``q_{i+1}`` = q_i with x_i removed,
  renormalised (x_{i+1}'s law given the earlier draws).  If every child is rejected,
  emit a sample of the last residual; at a leaf, a sample of p.

Why sampling is lossless.  At a node with history h, let ``O_i`` be the output law of
"try children i.. then the residual".  Since ``p_{i+1}`` depends on ``q_i`` (a function of
h and earlier draws) but not on ``x_i``, induction from the last child gives
``P(O_i = y) = min(p_i, q_i)(y) + (Σ max(0, p_i − q_i)) · norm(max(0, p_i − q_i))(y) = p_i(y)``,
so the emitted token has law p.  An accepted child's subtree was drawn from q given that
child's path, independently of its siblings, and the shape is fixed in advance, so the
same argument applies one level down.  (Top-b children of a deterministic drafter are not
draws from q: they are used for greedy only.  Pruning sampled trees by their
probabilities would also break the argument, so shapes are static.)
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from evspec.decoding.drafters.base import DrafterError
from evspec.decoding.protocols import Target
from evspec.decoding.engine import prefill_target
from evspec.decoding.sampling import logits_to_probs, sample, validate_sampling
from evspec.decoding.stats import RequestStats, Result, RoundStats
from evspec.models import tree_attention as ta
from evspec.models.causal_lm import sync, timed
from evspec.models.request import Request
from evspec.models.state import TargetState

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


# -- verification (model-free) -----------------------------------------------------------------


def _pad(q: torch.Tensor, width: int) -> torch.Tensor:
    if q.shape[-1] >= width:
        return q[..., :width]
    return torch.nn.functional.pad(q, (0, width - q.shape[-1]))


def verify_tree(
    p_logits: torch.Tensor,  # [T, V] target logits at every node
    tree: DraftTree,
    *,
    temperature: float,
    top_p: float = 1.0,
    generator: torch.Generator | None = None,
) -> tuple[list[int], int]:
    """``(path, next_token)``: accepted nodes (root excluded, root-to-leaf order) and the
    target's token after them.  See the module docstring for the rule."""
    if p_logits.shape[0] != len(tree.tokens):
        raise ValueError(f"need target logits at all {len(tree.tokens)} nodes, got {p_logits.shape[0]}")
    kids: dict[int, list[int]] = {}
    for c, par in enumerate(tree.parents):
        kids.setdefault(par, []).append(c)
    path: list[int] = []
    u = 0
    if temperature == 0:
        best = torch.argmax(p_logits, dim=-1).tolist()  # [T]
        while True:
            nxt = next((c for c in kids.get(u, []) if tree.tokens[c] == best[u]), None)
            if nxt is None:
                return path, best[u]
            path.append(nxt)
            u = nxt
    while True:
        p = logits_to_probs(p_logits[u], temperature, top_p)  # [V]
        children = kids.get(u, [])
        if not children:
            return path, sample(p, generator)
        q_u = tree.q[u]
        if q_u is None:
            raise ValueError(f"tree node {u} has children but no drafter distribution q (sampling needs it)")
        q = _pad(q_u.to(p.device).float(), p.shape[-1]).clone()  # [V]
        accepted = None
        for c in children:
            x = tree.tokens[c]
            r = float(torch.rand((), generator=generator, device=p.device))
            if r * float(q[x]) < float(p[x]):
                accepted = c
                break
            residual = torch.clamp(p - q, min=0.0)  # p_{i+1} = norm(max(0, p_i - q_i))
            mass = residual.sum()
            if mass > 0:
                p = residual / mass
            q[x] = 0.0  # q_{i+1}: without replacement
            q_mass = q.sum()
            if q_mass <= 0:
                break
            q = q / q_mass
        if accepted is None:
            return path, sample(p, generator)
        path.append(accepted)
        u = accepted


# -- drafting with a model ------------------------------------------------------------------------


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

    def begin(self, request: Request, target: Target, first_token: int) -> None:
        from evspec.decoding.drafters.model import ModelDrafter

        self._shared = ModelDrafter(self.model)._check_vocab(target)
        try:
            self._state = self.model.prefill(request)
        except ValueError as exc:
            raise DrafterError(f"tree drafter cannot prefill this request: {exc}") from exc
        self.timings = {k: self._state.timings.get(k, 0.0) for k in ("preprocess_ms", "vision_ms", "prefill_ms")}
        self._pending = [first_token]

    def _children(self, logits: torch.Tensor, b: int, temperature: float, gen) -> tuple[list[int], torch.Tensor | None]:
        """``b`` children from one node's logits ``[V]``: top-b, or drawn without replacement."""
        logits = logits[: self._shared]  # ids the target shares
        if temperature == 0:
            return torch.topk(logits, min(b, logits.numel())).indices.tolist(), None
        q = logits_to_probs(logits, temperature, self.top_p)  # [V']
        rest, kids = q.clone(), []
        for _ in range(min(b, int((q > 0).sum()))):  # sequential draws without replacement:
            x = sample(rest / rest.sum(), gen)  # the order verify_tree's q_i assumes
            kids.append(x)
            rest[x] = 0.0
        return kids, q

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

    def accept(self, tree: DraftTree, path: Sequence[int], next_token: int) -> None:
        """Keep the accepted ``path`` (tree node ids) in the drafter's cache; queue the rest."""
        state = self._state
        assert state is not None
        fed_path = [i - 1 for i in path if i - 1 < self._fed]  # leaves were never fed
        ta.keep_path(self.model, state, self._fed, fed_path)
        self._pending = [tree.tokens[i] for i in path[len(fed_path):]] + [next_token]
        self._fed = 0

    def end(self) -> None:
        self._state, self._pending, self._fed = None, [], 0


# -- acceptance control (timing at random-weight scale) --------------------------------------------


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


# -- the loop ------------------------------------------------------------------------------------


def generate_tree(
    target: Target,
    request: Request,
    drafter_model: Target,
    *,
    depth: int = 4,
    branch: int = 2,
    branching: tuple[int, ...] | None = None,
    max_new_tokens: int = 128,
    temperature: float = 0.0,
    top_p: float = 1.0,
    seed: int = 0,
    stop_at_eos: bool = True,
    on_token=None,
    forced_reference: list[int] | None = None,
    control: TreeControl | None = None,
) -> Result:
    """Answer ``request`` with tree speculative decoding (the engine's phases, with a tree).

    The tree has ``branching`` children per node at each depth, or ``branch`` at each of
    ``depth`` levels.  Lossless like ``engine.generate``.  ``stats``: ``gamma`` = tree depth,
    per round ``drafted`` = the depth used and ``accepted`` = the accepted path length (so
    α and τ read as for a chain).  ``forced_reference`` / ``control``: acceptance-controlled
    timing (greedy only), as in ``engine.generate``.
    """
    shape = TreeShape(tuple(branching)) if branching is not None else TreeShape.uniform(depth, branch)
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    validate_sampling(temperature, top_p)
    if forced_reference is not None:
        if temperature != 0:
            raise ValueError("forced_reference (acceptance-controlled) needs greedy decoding")
        max_new_tokens = min(max_new_tokens, len(forced_reference))
    device = target.device
    gen = torch.Generator(device=device).manual_seed(seed) if temperature > 0 else None
    stats = RequestStats(drafter=f"tree{shape.branching}", gamma=shape.depth)
    eos = target.eos_token_id if stop_at_eos else -1
    sync(device)
    t_start = time.perf_counter()

    # -- phase 1: prefill the target, first token ------------------------------------------
    state, first = prefill_target(
        target, request, stats, t_start, temperature=temperature, top_p=top_p, generator=gen,
        forced_reference=forced_reference,
    )
    tokens = [first]
    if on_token:
        on_token([first])
    stop = "eos" if first == eos else ("max_new_tokens" if max_new_tokens == 1 else "")

    # -- phase 2: prefill the drafter -------------------------------------------------------
    drafter = TreeDrafter(drafter_model, top_p=top_p)
    if not stop:
        drafter.begin(request, target, first)
        stats.draft_preprocess_ms = drafter.timings.get("preprocess_ms", 0.0)
        stats.draft_prefill_ms = drafter.timings.get("prefill_ms", 0.0)
        stats.draft_vision_ms = drafter.timings.get("vision_ms", 0.0)
    pending = first
    try:
        while not stop:
            budget = max_new_tokens - len(tokens)
            room = min(target.max_context - state.length, drafter_model.max_context - drafter._state.length - 1)
            if target.max_context - state.length < 1:
                stop = "context"
                break
            rnd: dict[str, float] = {}
            sub = shape.truncated(min(shape.depth, budget - 1, room - 1))
            # -- phase 3: propose a tree (or nothing when no room is left) --------------------
            if sub is not None:
                with timed(device, rnd, "draft_ms"):
                    tree = drafter.grow(sub, temperature, gen)
            else:
                tree = DraftTree(tokens=[-1], parents=[-1], q=[None])
            tree.tokens[0] = pending
            if control is not None and forced_reference is not None:
                control.apply(tree, forced_reference, len(tokens) - 1)
            # -- phase 4: score every node in one target pass, verify ---------------------------
            with timed(device, rnd, "score_ms"):
                scored = ta.score_tree(target, state, torch.tensor(tree.tokens), tree.parents)
                if forced_reference is not None:
                    path, nxt = _follow_reference(tree, forced_reference, len(tokens))
                else:
                    path, nxt = verify_tree(scored.logits, tree, temperature=temperature, top_p=top_p, generator=gen)
                # -- phase 5: keep root + accepted path in both caches ---------------------------
                ta.keep_path(target, state, len(tree.tokens), [0, *path])
            new = [tree.tokens[i] for i in path] + [nxt]
            if eos in new:
                new = new[: new.index(eos) + 1]
                stop = "eos"
            if sub is not None and not stop:
                drafter.accept(tree, path, nxt)
            elif sub is None and not stop:
                drafter._pending.append(nxt)
            # -- phase 6: record -------------------------------------------------------------------
            tokens.extend(new)
            pending = nxt
            stats.rounds.append(RoundStats(sub.depth if sub else 0, len(path), rnd.get("draft_ms", 0.0), rnd.get("score_ms", 0.0)))
            if on_token:
                on_token(new)
            if not stop and len(tokens) >= max_new_tokens:
                stop = "max_new_tokens"
    finally:
        drafter.end()
    sync(device)
    stats.total_ms = (time.perf_counter() - t_start) * 1e3
    stats.new_tokens = len(tokens)
    stats.stop_reason = stop
    return Result(tokens=tokens, text=target.decode_text(tokens), stats=stats)


def _follow_reference(tree: DraftTree, reference: list[int], at: int) -> tuple[list[int], int]:
    """Greedy walk with ``reference[at:]`` standing in for the target's argmax (the round's
    depth was capped by the token budget, so ``reference[j]`` exists at the stop)."""
    path, u, j = [], 0, at
    while True:
        nxt = next((c for c in tree.children(u) if tree.tokens[c] == reference[j]), None)
        if nxt is None:
            return path, reference[j]
        path.append(nxt)
        u, j = nxt, j + 1
