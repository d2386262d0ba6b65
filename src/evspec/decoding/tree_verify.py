"""Model-free verification of a drafted token tree (:func:`verify_tree`): the greedy walk
along the target's argmax, or recursive rejection sampling over each node's children
(SpecInfer's multi-draft rule, without replacement).  The rule and why it is lossless:
``decoding.tree``'s module docstring.
"""

from __future__ import annotations

import torch

from evspec.decoding.sampling import logits_to_probs, sample
from evspec.decoding.tree_shape import DraftTree

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
    n_ids: int | None = None,
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
        p = logits_to_probs(p_logits[u], temperature, top_p, n_ids)  # [V] over ids below n_ids
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

