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

Modules: this one holds the loop (:func:`generate_tree`); the tree types are in
``decoding.tree_shape``, the drafter in ``decoding.tree_draft``, the verification rule in
``decoding.tree_verify`` and acceptance control in ``decoding.tree_control`` (all
re-exported here).
"""

from __future__ import annotations

import time

import torch

from evspec.decoding.engine import check_run, prefill_target
from evspec.decoding.protocols import Target
from evspec.decoding.sampling import token_limit
from evspec.decoding.stats import RequestStats, Result, RoundStats
from evspec.decoding.tree_control import TreeControl
from evspec.decoding.tree_draft import TreeDrafter
from evspec.decoding.tree_head import HeadTreeDrafter
from evspec.decoding.tree_shape import MAX_NODES, DraftTree, TreeShape
from evspec.decoding.tree_verify import verify_tree
from evspec.models import tree_attention as ta
from evspec.models.causal_lm import sync, timed
from evspec.models.request import Request

__all__ = [
    "MAX_NODES",
    "DraftTree",
    "TreeControl",
    "TreeDrafter",
    "HeadTreeDrafter",
    "TreeShape",
    "generate_tree",
    "verify_tree",
]


# -- the loop ------------------------------------------------------------------------------------


def generate_tree(
    target: Target,
    request: Request,
    drafter_model: Target | TreeDrafter | HeadTreeDrafter,
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
    timing (greedy only), as in ``engine.generate``.  ``drafter_model``: a draft model (grown
    by a :class:`TreeDrafter`), or a ready tree drafter such as
    :class:`~evspec.decoding.tree_head.HeadTreeDrafter` (a trained draft head).
    """
    shape = TreeShape(tuple(branching)) if branching is not None else TreeShape.uniform(depth, branch)
    max_new_tokens = check_run(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                               forced_reference=forced_reference)
    device = target.device
    gen = torch.Generator(device=device).manual_seed(seed) if temperature > 0 else None
    drafter = drafter_model if hasattr(drafter_model, "grow") else TreeDrafter(drafter_model, top_p=top_p)
    hidden = bool(getattr(drafter, "needs_target_hidden", False))
    label = f"{drafter.name} " if hidden else ""
    stats = RequestStats(drafter=f"{label}tree{shape.branching}", gamma=shape.depth)
    eos = target.eos_token_id if stop_at_eos else -1
    sync(device)
    t_start = time.perf_counter()

    # -- phase 1: prefill the target, first token ------------------------------------------
    state, first = prefill_target(
        target, request, stats, t_start, temperature=temperature, top_p=top_p, generator=gen,
        forced_reference=forced_reference, return_hidden=hidden,
    )
    tokens = [first]
    if on_token:
        on_token([first])
    stop = "eos" if first == eos else ("max_new_tokens" if max_new_tokens == 1 else "")

    # -- phase 2: prefill the drafter -------------------------------------------------------
    if not stop:
        drafter.begin(request, target, first, state)
        stats.record_draft_begin(drafter)
    pending = first
    try:
        while not stop:
            budget = max_new_tokens - len(tokens)
            room = min(target.max_context - state.length, drafter.room())
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
                scored = ta.score_tree(target, state, torch.tensor(tree.tokens), tree.parents, return_hidden=hidden)
                if forced_reference is not None:
                    path, nxt = _follow_reference(tree, forced_reference, len(tokens))
                else:
                    path, nxt = verify_tree(scored.logits, tree, temperature=temperature,
                                            top_p=top_p, generator=gen, n_ids=token_limit(target))
                # -- phase 5: keep root + accepted path in both caches ---------------------------
                ta.keep_path(target, state, len(tree.tokens), [0, *path])
            new = [tree.tokens[i] for i in path] + [nxt]
            if eos in new:
                new = new[: new.index(eos) + 1]
                stop = "eos"
            if not stop:
                states = scored.hidden[[0, *path]] if hidden else None  # root + accepted path
                if sub is not None:
                    drafter.accept(tree, path, nxt, states)
                else:
                    drafter.skip(nxt, states)
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
