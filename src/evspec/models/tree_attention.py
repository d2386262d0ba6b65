"""Score a token tree in one decoder pass, then keep only one root-to-node path.

A *tree* is a forest hanging off the end of a model's KV cache: node ``i`` has a token and
a parent (``-1`` = it follows the cached linear prefix directly).  Feeding all nodes in
one pass needs

* a 4D additive attention mask ``[1, 1, T, past + T]``: node i sees every cached
  position and exactly its ancestors-or-self among the tree nodes (0 = visible, the
  dtype's minimum = hidden; finite, so no row is all −inf);
* explicit depth-based ``position_ids`` ``[1, T]``: ``past + depth(i)`` (roots at depth 0),
  so a node's rotary phase is the one it would have on the straight path.

The pass appends all T nodes' keys/values to the (transformers ``DynamicCache``) cache.
:func:`keep_path` then copies the chosen path's entries into consecutive slots right
after the prefix and crops the rest.  Because node i's keys were rotated for position
``past + depth(i)`` and the path's node at depth d lands in slot ``past + d``, the kept
cache is exactly what feeding the path as a straight sequence would have written.

Layers are replaced with *new* tensors (``index_select`` / ``cat``), never written in place:
a ``DynamicLayer``'s tensors may be shared with a prefix-cache entry.  Trees can be fed in
several passes (level by level, as a drafter grows them): ``n_cached`` nodes already in the
cache, the rest fed now.  Works on the dynamic-cache path of
:class:`~evspec.models.causal_lm.CausalLMWrapper` (``decoder`` = an HF ``LlamaModel``);
the static fast path is refused.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from evspec.models.state import ScoreOutput, TargetState


def validate_parents(parents: Sequence[int]) -> list[int]:
    """Parents as ints; each must be -1 or an earlier node (topological order)."""
    out = [int(p) for p in parents]
    for i, p in enumerate(out):
        if not -1 <= p < i:
            raise ValueError(f"tree node {i} has parent {p}: parents must be -1 or an earlier node index")
    return out


def depths(parents: Sequence[int]) -> list[int]:
    """Depth of each node (roots 0)."""
    out: list[int] = []
    for p in parents:
        out.append(0 if p < 0 else out[p] + 1)
    return out


def ancestor_matrix(parents: Sequence[int]) -> torch.Tensor:
    """``[T, T]`` bool: ``A[i, j]`` iff node j is node i or one of its ancestors."""
    n = len(parents)
    anc = torch.zeros(n, n, dtype=torch.bool)
    for i, p in enumerate(parents):
        if p >= 0:
            anc[i] = anc[p]
        anc[i, i] = True
    return anc


def tree_mask(past: int, parents: Sequence[int], n_cached: int, dtype: torch.dtype, device: Any) -> torch.Tensor:
    """Additive mask ``[1, 1, T_new, past + T]`` for feeding nodes ``n_cached..T-1`` with
    ``past`` linear positions and nodes ``0..n_cached-1`` already cached."""
    anc = ancestor_matrix(parents)[n_cached:]  # [T_new, T]
    visible = torch.cat([torch.ones(anc.shape[0], past, dtype=torch.bool), anc], dim=1)  # [T_new, past + T]
    mask = torch.zeros(visible.shape, dtype=dtype)
    mask.masked_fill_(~visible, torch.finfo(dtype).min)
    return mask[None, None].to(device)


def _check_dynamic(state: TargetState) -> None:
    from evspec.models.fast.static_cache import StaticKVCache

    if isinstance(state.cache, StaticKVCache):
        raise RuntimeError(
            "tree attention runs on the dynamic-cache path; call disable_fast() on the model "
            "before tree decoding"
        )


@torch.inference_mode()
def score_tree(
    model: Any,
    state: TargetState,
    tokens: torch.Tensor,  # [T] all nodes' ids
    parents: Sequence[int],  # [T]
    *,
    n_cached: int = 0,
    return_hidden: bool = False,
) -> ScoreOutput:
    """Feed nodes ``n_cached..T-1`` of the tree in one pass; returns float32 logits
    ``[T - n_cached, V]`` (the next-token logits *at* each fed node) and, when asked, the
    last hidden states ``[T - n_cached, H]``.

    The cache must hold ``state.length`` linear positions plus the first ``n_cached`` nodes.
    ``state.length`` is not changed: the tree stays tentative until :func:`keep_path`.
    A model with its own ``score_tree(state, tokens, parents, n_cached=)`` (e.g. a test
    stub without an HF decoder) is used as is.
    """
    own = getattr(model, "score_tree", None)
    if callable(own):
        return own(state, tokens, parents, n_cached=n_cached)
    _check_dynamic(state)
    parents = validate_parents(parents)
    total = len(parents)
    ids = tokens.reshape(-1).long()
    if ids.numel() != total:
        raise ValueError(f"score_tree: {ids.numel()} tokens but {total} parents")
    if not 0 <= n_cached < total:
        raise ValueError(f"score_tree: n_cached = {n_cached} must be in [0, {total})")
    have = int(state.cache.get_seq_length())
    if have != state.length + n_cached:
        raise ValueError(
            f"score_tree: the cache holds {have} positions, expected {state.length} + {n_cached} cached nodes"
        )
    if state.length + max(depths(parents)) + 1 > model.max_context:
        raise ValueError(f"score_tree: the tree is deeper than the {model.max_context - state.length} positions left")
    device, dtype = model.device, model.dtype
    mask = tree_mask(state.length, parents, n_cached, dtype, device)  # [1, 1, T_new, past + T]
    pos = torch.tensor(depths(parents)[n_cached:], dtype=torch.long, device=device) + state.length  # [T_new]
    out = model.decoder(
        input_ids=ids[n_cached:][None].to(device),  # [1, T_new]
        attention_mask=mask,
        position_ids=pos[None],  # [1, T_new]
        past_key_values=state.cache,
        use_cache=True,
    )
    hidden = out.last_hidden_state[0]  # [T_new, H]
    logits = model.lm_head(hidden).float()  # [T_new, V]
    return ScoreOutput(logits=logits, hidden=hidden if return_hidden else None)


def keep_path(model: Any, state: TargetState, n_tree: int, path: Sequence[int]) -> None:
    """Keep tree nodes ``path`` (a root-to-node chain, in order) of the ``n_tree`` nodes
    after ``state.length``; drop the other nodes.  ``state.length += len(path)``.
    ``model.keep_path(state, n_tree, path)`` is used instead when the model has one."""
    own = getattr(model, "keep_path", None)
    if callable(own):
        own(state, n_tree, path)
        return
    _check_dynamic(state)
    path = [int(i) for i in path]
    if any(not 0 <= i < n_tree for i in path) or any(b <= a for a, b in zip(path, path[1:])):
        raise ValueError(f"keep_path: {path} is not an increasing list of nodes in [0, {n_tree})")
    past = state.length
    have = int(state.cache.get_seq_length())
    if have != past + n_tree:
        raise ValueError(f"keep_path: the cache holds {have} positions, expected {past} + {n_tree} tree nodes")
    if path != list(range(len(path))):  # already in place when the path is the first nodes
        for layer in state.cache.layers:
            idx = torch.tensor(path, dtype=torch.long, device=layer.keys.device) + past  # [n]
            layer.keys = torch.cat([layer.keys[:, :, :past], layer.keys.index_select(2, idx)], dim=2)
            layer.values = torch.cat([layer.values[:, :, :past], layer.values.index_select(2, idx)], dim=2)
    drop = int(state.cache.get_seq_length()) - past - len(path)
    if drop:
        state.cache.crop(-drop)
    state.length = past + len(path)
