"""Fused projection weights over the *same* memory as the transformers modules.

A decode step at batch 1 is a chain of matrix-vector products; each costs its bytes
plus a fixed per-kernel overhead, so fewer, bigger matrices are faster.  Per layer this
module allocates

    qkv      [(Hq + 2 Hkv) * D, H]   rows: q_proj, then k_proj, then v_proj
    gate_up  [2 I, H]                rows: gate_proj, then up_proj

copies the HF weights (and biases, when the config has them) in, and then re-points the
HF modules' ``.weight`` / ``.bias`` to row slices (views) of the fused tensors::

    q_proj.weight = Parameter(qkv[0 : Hq*D])          (same storage, no copy)

so the HF forward, ``state_dict`` and the fast path all read one copy of the weights:
fusing costs no memory once the old tensors are freed (peak: one layer's q/k/v or
gate/up extra while copying).  Fusion is in place and not undone by ``disable_fast``
(the views remain valid HF weights).  Things that replace the parameters afterwards
(``model.to(other dtype/device)``, loading a state dict with ``assign=True``) detach the
HF modules from the fused tensors: call ``enable_fast`` again to re-fuse.  A weight that
is not a plain floating ``nn.Linear`` (e.g. bitsandbytes 4-bit) cannot be fused:
:func:`can_fuse` says so and ``fuse=True`` raises.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import torch
from torch import nn

from evspec.models.fast.ops import ACTIVATIONS


@dataclass(frozen=True, eq=False)
class FusedLayer:
    """One decoder layer's tensors for the fused path (all share the HF modules' storage).

    ``qkv_weight`` ``[(Hq + 2 Hkv) * D, H]``, ``gate_up_weight`` ``[2 I, H]``,
    ``o_weight`` ``[H, Hq * D]``, ``down_weight`` ``[H, I]``, norms ``[H]``; biases
    ``None`` unless the config has them.  ``act``: ``config.hidden_act``.
    """

    qkv_weight: torch.Tensor
    qkv_bias: torch.Tensor | None
    o_weight: torch.Tensor
    o_bias: torch.Tensor | None
    gate_up_weight: torch.Tensor
    gate_up_bias: torch.Tensor | None
    down_weight: torch.Tensor
    down_bias: torch.Tensor | None
    ln1_weight: torch.Tensor
    ln1_eps: float
    ln2_weight: torch.Tensor
    ln2_eps: float
    act: str


#: layer module -> its FusedLayer, valid while the HF weights still point into it
_FUSED: weakref.WeakKeyDictionary[nn.Module, FusedLayer] = weakref.WeakKeyDictionary()


def _plain_linear(module: object) -> bool:
    return (
        type(module) is nn.Linear
        and module.weight.is_floating_point()
        and module.weight.dim() == 2
    )


def can_fuse(decoder: nn.Module) -> str | None:
    """``None`` when every layer's projections are plain floating ``nn.Linear`` of one
    dtype/device and the activation is implemented, else the reason they cannot be fused."""
    act = str(getattr(decoder.config, "hidden_act", "silu"))
    if act not in ACTIVATIONS:
        return f"hidden_act {act!r} is not one of {', '.join(ACTIVATIONS)}"
    for i, layer in enumerate(decoder.layers):
        attn, mlp = layer.self_attn, layer.mlp
        for name, mod in (("q_proj", attn.q_proj), ("k_proj", attn.k_proj), ("v_proj", attn.v_proj),
                          ("o_proj", attn.o_proj), ("gate_proj", getattr(mlp, "gate_proj", None)),
                          ("up_proj", getattr(mlp, "up_proj", None)),
                          ("down_proj", getattr(mlp, "down_proj", None))):
            if not _plain_linear(mod):
                return f"layer {i} {name} is a {type(mod).__name__}, not a plain floating nn.Linear"
        group = (attn.q_proj, attn.k_proj, attn.v_proj, mlp.gate_proj, mlp.up_proj)
        if len({(m.weight.dtype, m.weight.device) for m in group}) != 1:
            return f"layer {i} projections differ in dtype or device"
        if len({m.bias is None for m in group[:3]}) != 1 or len({m.bias is None for m in group[3:]}) != 1:
            return f"layer {i}: some projections have a bias and others not"
    return None


def _norm_eps(norm: nn.Module) -> float:
    eps = getattr(norm, "variance_epsilon", getattr(norm, "eps", None))
    if eps is None:
        raise TypeError(f"{type(norm).__name__} has no variance_epsilon/eps: not a LLaMA RMSNorm")
    return float(eps)


def _concat_into_views(modules: list[nn.Linear], attr: str) -> torch.Tensor | None:
    """One tensor holding ``modules[i].<attr>`` row blocks in order; each module's
    parameter is replaced by a view into it (same ``requires_grad``)."""
    parts = [getattr(m, attr) for m in modules]
    if parts[0] is None:
        return None
    rows = [int(p.shape[0]) for p in parts]
    fused = torch.empty((sum(rows), *parts[0].shape[1:]), dtype=parts[0].dtype, device=parts[0].device)
    start = 0
    for mod, part, n in zip(modules, parts, rows):
        fused[start : start + n].copy_(part)
        setattr(mod, attr, nn.Parameter(fused[start : start + n], requires_grad=part.requires_grad))
        start += n
    return fused


def _still_fused(layer: nn.Module, fused: FusedLayer) -> bool:
    """Whether the HF modules still read their weights from ``fused`` (nothing replaced)."""
    attn, mlp = layer.self_attn, layer.mlp
    for mods, tensor in (((attn.q_proj, attn.k_proj, attn.v_proj), fused.qkv_weight),
                         ((mlp.gate_proj, mlp.up_proj), fused.gate_up_weight)):
        offset = 0
        for m in mods:
            if m.weight.data_ptr() != tensor[offset:].data_ptr():
                return False
            offset += int(m.weight.shape[0])
    return (
        attn.o_proj.weight.data_ptr() == fused.o_weight.data_ptr()
        and mlp.down_proj.weight.data_ptr() == fused.down_weight.data_ptr()
        and layer.input_layernorm.weight.data_ptr() == fused.ln1_weight.data_ptr()
        and layer.post_attention_layernorm.weight.data_ptr() == fused.ln2_weight.data_ptr()
    )


def fuse_layer(layer: nn.Module, act: str) -> FusedLayer:
    """Fuse one decoder layer (or return its existing fusion when still in place).  The
    fused tensors are ordinary (not inference-mode) tensors even when called under
    ``torch.inference_mode``, so the model stays trainable afterwards."""
    known = _FUSED.get(layer)
    if known is not None and _still_fused(layer, known):
        return known
    with torch.inference_mode(False), torch.no_grad():
        return _fuse_layer(layer, act)


def _fuse_layer(layer: nn.Module, act: str) -> FusedLayer:
    attn, mlp = layer.self_attn, layer.mlp
    qkv = (attn.q_proj, attn.k_proj, attn.v_proj)
    gate_up = (mlp.gate_proj, mlp.up_proj)
    fused = FusedLayer(
        qkv_weight=_concat_into_views(list(qkv), "weight"),
        qkv_bias=_concat_into_views(list(qkv), "bias"),
        o_weight=attn.o_proj.weight.detach(),
        o_bias=None if attn.o_proj.bias is None else attn.o_proj.bias.detach(),
        gate_up_weight=_concat_into_views(list(gate_up), "weight"),
        gate_up_bias=_concat_into_views(list(gate_up), "bias"),
        down_weight=mlp.down_proj.weight.detach(),
        down_bias=None if mlp.down_proj.bias is None else mlp.down_proj.bias.detach(),
        ln1_weight=layer.input_layernorm.weight.detach(),
        ln1_eps=_norm_eps(layer.input_layernorm),
        ln2_weight=layer.post_attention_layernorm.weight.detach(),
        ln2_eps=_norm_eps(layer.post_attention_layernorm),
        act=act,
    )
    _FUSED[layer] = fused
    return fused


def fuse_decoder(decoder: nn.Module, layers: list[nn.Module]) -> list[FusedLayer]:
    """Fuse ``layers`` of ``decoder`` in place (see the module docstring); raises
    ``ValueError`` naming the obstacle when :func:`can_fuse` refuses."""
    reason = can_fuse(decoder)
    if reason is not None:
        raise ValueError(f"cannot fuse the projections: {reason}; use enable_fast(fuse=False)")
    act = str(getattr(decoder.config, "hidden_act", "silu"))
    return [fuse_layer(layer, act) for layer in layers]
