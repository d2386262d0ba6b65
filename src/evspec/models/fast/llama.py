"""A compact LLaMA decoder forward over a static KV cache, sharing a transformers model's
weights (gpt-fast style).

:class:`FastLlama` holds *references* to the modules of a transformers ``LlamaModel``
(``embed_tokens``, per layer ``q/k/v/o_proj``, ``mlp``, the two RMSNorms, the final
``norm``, the rotary embedding's ``inv_freq`` and ``attention_scaling``): no weight is
copied.  One call runs the whole stack over ``T`` new positions::

    x [T, H] (embeddings, or token ids [T] looked up)
    per layer:  h = RMSNorm(x); q, k, v = proj(h) -> RoPE(q, k) at positions start + i
                k, v written into the cache at those positions
                attention of q over cache positions [0, kv_len) with mask
                    key j visible to query i  <=>  j <= start + i
                x = x + o_proj(attn);  x = x + mlp(RMSNorm(x))
    -> final RMSNorm -> hidden [T, H]

Two ways to run a layer:

* ``fuse=False``: call the HF modules (a 4-bit or otherwise custom ``nn.Linear`` keeps
  working; forward hooks on them fire);
* ``fuse=True``: q/k/v and gate/up become one matrix each (:mod:`.fused`, the HF modules'
  weights turned into views of them, no extra memory) and the layer runs as the two
  functions of :mod:`.layer` (RMSNorm, RoPE, activation from :mod:`.ops`), which
  :meth:`FastLlama.compile` hands to ``torch.compile`` for the fixed-size steps.

``start`` is a Python int or a 0-d / one-element device tensor (so one CUDA graph serves
every position); ``kv_len`` is a static number of cache rows to attend over (>= start + T).
Masking, decided once per pass (:meth:`FastLlama.attention_plan`): from position 0 over
exactly ``T`` rows, plain causal SDPA (the flash kernel); a Python ``start`` over exactly
``start + T`` rows, lower-right causal (flash/efficient kernels, no mask tensor; one
query: no mask at all); otherwise (a device ``start`` or padded rows) an additive
``[T, kv_len]`` mask built on the device from the positions, shared by all layers.
``attention`` picks the kernel for masked steps (see :data:`ATTENTION_KINDS`).  The
cache's ``length`` pointer is *not* moved here: the caller decides which written
positions become valid.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.attention.bias import CausalBias

from evspec.models.fast.fused import FusedLayer, fuse_decoder
from evspec.models.fast.layer import (
    attention_inputs,
    attention_inputs_any_length,
    attention_output_and_mlp,
    attention_output_and_mlp_any_length,
)
from evspec.models.fast.ops import (
    apply_rope,
    attention_bias,
    lower_right_causal,
    rms_norm,
    rope_tables,
    rotation_sin,
)
from evspec.models.fast import triton_layer
from evspec.models.fast.decode_attention import MAX_ROWS, split_kv_attention
from evspec.models.fast.static_cache import StaticKVCache

#: RoPE variants whose frequencies are fixed at construction (read from the HF module);
#: ``dynamic`` / ``longrope`` change them with the sequence length and are not supported.
STATIC_ROPE_TYPES = ("default", "linear", "llama3", "yarn")

#: attention over the cache for masked steps (exact-length passes always use SDPA's
#: causal forms): ``sdpa`` = ``scaled_dot_product_attention`` with an additive mask (a
#: fused kernel); ``matmul`` = two batched matmuls + float32 softmax (HF eager numerics);
#: ``auto`` = ``sdpa`` for one query, ``matmul`` for several (on the H200 at 7B shapes the
#: fused kernel wins the decode step, 5.12 vs 5.51 ms, and loses the 9-token score step,
#: 6.53 vs 5.81 ms: benchmarks/fast_engine.md, round 3); ``splitkv`` = split-KV decode
#: attention (:mod:`.decode_attention`: Triton kernels on CUDA, a torch reference elsewhere;
#: not yet timed inside the engine, opt-in)
ATTENTION_KINDS = ("sdpa", "matmul", "auto", "splitkv")
#: the layer functions of a step of at most 16 tokens: ``torch`` = :mod:`.layer` (eager or
#: compiled); ``triton`` = :mod:`.triton_layer` (four Triton kernels; opt-in, not yet timed)
KERNEL_KINDS = ("torch", "triton")


@dataclass(frozen=True, eq=False)
class AttentionPlan:
    """How one pass attends: query ``positions`` ``[T]`` (device), cache rows ``kv_len``,
    and either ``is_causal`` (from position 0), a lower-right :class:`CausalBias`, an
    additive mask ``[T, kv_len]``, or no mask (every row visible)."""

    positions: torch.Tensor
    kv_len: int
    mask: torch.Tensor | CausalBias | None
    is_causal: bool = False


def _require(obj: object, names: tuple[str, ...], what: str) -> None:
    missing = [n for n in names if not hasattr(obj, n)]
    if missing:
        raise TypeError(
            f"FastLlama needs a transformers LlamaModel-like decoder; {what} "
            f"({type(obj).__name__}) lacks {', '.join(missing)}"
        )


class FastLlama:
    """Static-cache forward of a transformers ``LlamaModel`` (weights shared, not copied).

    ``head``: optional output projection (the wrapper's ``lm_head``) used by
    :meth:`logits`; ``fuse``: fuse q/k/v and gate/up in place and run the layers as the
    functions of :mod:`.layer` (see the module docstring).  Raises ``TypeError`` for a
    decoder that is not LLaMA-shaped, ``NotImplementedError`` for RoPE types or attention
    variants it does not implement, ``ValueError`` when ``fuse`` meets unfusable weights.
    """

    def __init__(
        self,
        decoder: nn.Module,
        head: nn.Module | None = None,
        *,
        attention: str = "sdpa",
        fuse: bool = False,
        kernels: str = "torch",
    ) -> None:
        if attention not in ATTENTION_KINDS:
            raise ValueError(
                f"FastLlama attention must be one of {', '.join(ATTENTION_KINDS)}, got {attention!r}"
            )
        if kernels not in KERNEL_KINDS:
            raise ValueError(f"FastLlama kernels must be one of {', '.join(KERNEL_KINDS)}, got {kernels!r}")
        if kernels == "triton" and not fuse:
            raise ValueError("kernels='triton' runs the fused layer: build FastLlama with fuse=True")
        self.attention = attention
        self.kernels = kernels
        _require(decoder, ("config", "embed_tokens", "layers", "norm", "rotary_emb"), "the decoder")
        cfg = decoder.config
        self.decoder = decoder
        self.head = head
        self.layers = list(decoder.layers[: cfg.num_hidden_layers])
        for i, layer in enumerate(self.layers):
            _require(layer, ("self_attn", "mlp", "input_layernorm", "post_attention_layernorm"),
                     f"layer {i}")
            _require(layer.self_attn, ("q_proj", "k_proj", "v_proj", "o_proj"), f"layer {i}.self_attn")
        rope_type = getattr(decoder.rotary_emb, "rope_type", "default")
        if not isinstance(rope_type, str) or rope_type not in STATIC_ROPE_TYPES:
            raise NotImplementedError(
                f"FastLlama supports RoPE types {', '.join(STATIC_ROPE_TYPES)}; this model's "
                f"config asks for {rope_type!r} (frequencies that change with the sequence "
                "length); run it on the default (dynamic-cache) path"
            )
        if getattr(cfg, "sliding_window", None) or getattr(cfg, "layer_types", None) not in (
            None, ["full_attention"] * len(self.layers),
        ):
            raise NotImplementedError(
                "FastLlama implements full causal attention only; this config has sliding "
                "windows or mixed layer types"
            )
        attn = self.layers[0].self_attn
        self.num_heads = int(cfg.num_attention_heads)
        self.num_kv_heads = int(cfg.num_key_value_heads)
        self.head_dim = int(getattr(attn, "head_dim", cfg.hidden_size // cfg.num_attention_heads))
        self.hidden_size = int(cfg.hidden_size)
        self.scale = float(getattr(attn, "scaling", self.head_dim**-0.5))
        self.rope_type = rope_type
        if self.num_heads % self.num_kv_heads:
            raise ValueError(
                f"num_attention_heads {self.num_heads} must be a multiple of "
                f"num_key_value_heads {self.num_kv_heads}"
            )
        self.fused: list[FusedLayer] | None = fuse_decoder(decoder, self.layers) if fuse else None
        if kernels == "triton":
            f = self.fused[0]
            why = triton_layer.supported(self.head_dim, f.act, any(
                b is not None for b in (f.qkv_bias, f.o_bias, f.gate_up_bias, f.down_bias)))
            if why is not None:
                raise ValueError(f"kernels='triton' does not take this model: {why}")
        self._final_eps = float(getattr(decoder.norm, "variance_epsilon", getattr(decoder.norm, "eps", 1e-6)))
        self._compiled: tuple[Callable[..., torch.Tensor], Callable[..., torch.Tensor]] | None = None
        self._compiled_any: tuple[Callable[..., torch.Tensor], Callable[..., torch.Tensor]] | None = None

    # -- geometry -------------------------------------------------------------------------
    @property
    def num_layers(self) -> int:
        return len(self.layers)

    @property
    def device(self) -> torch.device:
        return self.decoder.embed_tokens.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.decoder.embed_tokens.weight.dtype

    def new_cache(self, max_len: int, *, slack: int = 0) -> StaticKVCache:
        """A zeroed static cache shaped for this model on its device and dtype."""
        return StaticKVCache.allocate(
            layers=self.num_layers,
            kv_heads=self.num_kv_heads,
            head_dim=self.head_dim,
            max_len=max_len,
            slack=slack,
            dtype=self.dtype,
            device=self.device,
        )

    # -- pieces ---------------------------------------------------------------------------
    def rope(self, positions: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """``positions`` ``[T]`` -> ``(cos, sin)`` ``[T, head_dim]`` in ``dtype``, computed
        in float32 exactly as the HF rotary embedding does (incl. ``attention_scaling``)."""
        rotary = self.decoder.rotary_emb
        return rope_tables(positions, rotary.inv_freq.to(positions.device),
                           float(rotary.attention_scaling), dtype)

    def attention_plan(
        self, start: int | torch.Tensor, t: int, kv_len: int | None, capacity: int, dtype: torch.dtype,
        device: torch.device,
    ) -> AttentionPlan:
        """Positions and masking of a pass of ``t`` tokens at ``start`` (module docstring)."""
        if isinstance(start, torch.Tensor):
            if kv_len is None:
                raise ValueError("kv_len is required when start is a device tensor")
            if start.numel() != 1:
                raise ValueError(f"a device start must hold one position, got shape {tuple(start.shape)}")
            positions = start.reshape(()) + torch.arange(t, device=device)  # [T]
            return AttentionPlan(positions, kv_len, attention_bias(positions, kv_len, dtype))
        kv_len = start + t if kv_len is None else kv_len
        if not start + t <= kv_len <= capacity:
            raise ValueError(
                f"kv_len {kv_len} must cover the new positions (start {start} + {t}) and "
                f"fit the cache capacity {capacity}"
            )
        positions = torch.arange(start, start + t, device=device)  # [T]
        if kv_len == start + t:
            if start == 0 and t > 1:
                return AttentionPlan(positions, kv_len, None, is_causal=True)
            if t == 1:  # one query at the end sees every row
                return AttentionPlan(positions, kv_len, None)
            if self.kernel_for(t) == "sdpa" and self.num_kv_heads == self.num_heads:
                return AttentionPlan(positions, kv_len, lower_right_causal(t, kv_len))
        return AttentionPlan(positions, kv_len, attention_bias(positions, kv_len, dtype))

    def kernel_for(self, queries: int) -> str:
        """The kernel (``sdpa``, ``matmul`` or ``splitkv``) a masked pass of ``queries`` tokens uses."""
        if self.attention == "auto":
            return "sdpa" if queries == 1 else "matmul"
        return self.attention

    def compile(self, *, mode: str | None = None, backend: str = "inductor", prefill: bool = True) -> None:
        """``torch.compile`` the two per-layer functions (fused path only) for the steps:
        ``fullgraph=True, dynamic=False``; ``mode`` (None = torch.compile's default; e.g.
        ``"max-autotune-no-cudagraphs"``) applies to the inductor backend; raises dynamo's
        recompile limit to 64 (process-wide) so every step size of every model compiles.
        With ``prefill``, also their any-length twins (token dimension dynamic) for
        prefills.  Compilation happens at the first call of each step size (and at the
        first prefill); see :mod:`.layer` for the cut."""
        if self.fused is None:
            raise ValueError("compile needs the fused layer functions: build FastLlama with fuse=True")
        # one compiled entry per step size and per model shape (target, drafter, heads'
        # models): more than dynamo's default of 8 per function, past which it runs eager
        torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
        opts: dict = {"fullgraph": True, "backend": backend}
        if backend == "inductor" and mode is not None:
            opts["mode"] = mode
        self._compiled = (torch.compile(attention_inputs, dynamic=False, **opts),
                          torch.compile(attention_output_and_mlp, dynamic=False, **opts))
        self._compiled_any = None
        if prefill:  # dynamic=None + the token dims marked below: only T is symbolic
            self._compiled_any = (torch.compile(attention_inputs_any_length, dynamic=None, **opts),
                                  torch.compile(attention_output_and_mlp_any_length, dynamic=None, **opts))

    @property
    def compiled(self) -> bool:
        return self._compiled is not None

    @property
    def compiled_prefill(self) -> bool:
        return self._compiled_any is not None

    # -- the pass -------------------------------------------------------------------------
    def forward(
        self,
        cache: StaticKVCache,
        start: int | torch.Tensor,
        *,
        tokens: torch.Tensor | None = None,  # [T] int64
        embeds: torch.Tensor | None = None,  # [T, H]
        kv_len: int | None = None,
        compiled: bool = False,
        any_length: bool = False,
    ) -> torch.Tensor:
        """Hidden states ``[T, H]`` of positions ``start .. start + T - 1``; writes their
        keys/values into ``cache`` (its ``length`` is left to the caller).

        ``kv_len`` (default ``start + T``, int ``start`` only): cache rows attended over.
        ``compiled``: run the fused layers through the functions :meth:`compile` made:
        the fixed-size ones, or with ``any_length`` (prefills) the dynamic-length ones
        (eager when those were not compiled).
        """
        if (tokens is None) == (embeds is None):
            raise ValueError("FastLlama.forward takes exactly one of tokens or embeds")
        if compiled and self._compiled is None:
            raise RuntimeError("forward(compiled=True) before FastLlama.compile()")
        x = self.decoder.embed_tokens(tokens) if embeds is None else embeds  # [T, H]
        t = int(x.shape[0])
        plan = self.attention_plan(start, t, kv_len, cache.capacity, x.dtype, x.device)
        cos, sin = self.rope(plan.positions, x.dtype)  # [T, D] each
        sin = rotation_sin(sin)  # [T, D], first half negated (see ops.apply_rope)
        if self.fused is None:
            for i, layer in enumerate(self.layers):
                x = self._layer_modules(layer, x, cos, sin, cache.k[i], cache.v[i], plan)
            return self.decoder.norm(x)  # [T, H]
        pre, post = attention_inputs, attention_output_and_mlp
        dynamic = compiled and any_length and self._compiled_any is not None
        if self.kernels == "triton" and not any_length and t <= triton_layer.MAX_ROWS:
            pre, post = triton_layer.triton_attention_inputs, triton_layer.triton_attention_output_and_mlp
        elif dynamic:
            pre, post = self._compiled_any
        elif compiled and not any_length:
            pre, post = self._compiled
        for i, f in enumerate(self.fused):
            if dynamic:  # only the token count is symbolic (one compile for every length)
                for tensor in (x, cos, sin, plan.positions):
                    torch._dynamo.maybe_mark_dynamic(tensor, 0)
            q = pre(x, f.ln1_weight, f.qkv_weight, f.qkv_bias, cos, sin, cache.k[i], cache.v[i],
                    plan.positions, f.ln1_eps, self.num_heads, self.num_kv_heads)  # [Hq, T, D]
            out = self._attend(q, cache.k[i, :, : plan.kv_len], cache.v[i, :, : plan.kv_len], plan)
            if dynamic:
                torch._dynamo.maybe_mark_dynamic(x, 0)
                torch._dynamo.maybe_mark_dynamic(out, 1)
            x = post(x, out, f.o_weight, f.o_bias, f.ln2_weight, f.gate_up_weight, f.gate_up_bias,
                     f.down_weight, f.down_bias, f.ln2_eps, f.act)  # [T, H]
        return rms_norm(x, self.decoder.norm.weight, self._final_eps)  # [T, H]

    def _layer_modules(
        self,
        layer: nn.Module,
        x: torch.Tensor,  # [T, H]
        cos: torch.Tensor,  # [T, D]
        sin: torch.Tensor,  # [T, D], rotation_sin
        k_cache: torch.Tensor,  # [Hkv, capacity, D]
        v_cache: torch.Tensor,
        plan: AttentionPlan,
    ) -> torch.Tensor:
        """One layer through the HF modules (the unfused path)."""
        t = int(x.shape[0])
        attn = layer.self_attn
        h = layer.input_layernorm(x)  # [T, H]
        q = attn.q_proj(h).view(t, self.num_heads, self.head_dim)  # [T, Hq, D]
        k = attn.k_proj(h).view(t, self.num_kv_heads, self.head_dim)  # [T, Hkv, D]
        v = attn.v_proj(h).view(t, self.num_kv_heads, self.head_dim)
        q, k = apply_rope(q, cos, sin).transpose(0, 1), apply_rope(k, cos, sin).transpose(0, 1)
        k_cache.index_copy_(1, plan.positions, k)  # rows start..start+T-1
        v_cache.index_copy_(1, plan.positions, v.transpose(0, 1))
        out = self._attend(q, k_cache[:, : plan.kv_len], v_cache[:, : plan.kv_len], plan)  # [Hq, T, D]
        x = x + attn.o_proj(out.transpose(0, 1).reshape(t, self.num_heads * self.head_dim))
        return x + layer.mlp(layer.post_attention_layernorm(x))

    def _attend(
        self,
        q: torch.Tensor,  # [Hq, T, D]
        keys: torch.Tensor,  # [Hkv, S, D]
        vals: torch.Tensor,  # [Hkv, S, D]
        plan: AttentionPlan,
    ) -> torch.Tensor:
        """Attention of ``q`` over the attended cache rows per ``plan`` -> ``[Hq, T, D]``."""
        kind = self.kernel_for(q.shape[1])
        if kind == "splitkv" and not plan.is_causal and q.shape[1] * self.num_heads <= MAX_ROWS * self.num_kv_heads:
            # every plan but a prefill from 0 means "key j visible to query i iff j <= positions[i]"
            return split_kv_attention(q.contiguous(), keys, vals, plan.positions, plan.kv_len, self.scale)
        if kind == "matmul" and not plan.is_causal and not isinstance(plan.mask, CausalBias):
            return self._attend_matmul(q, keys, vals, plan.mask)
        return F.scaled_dot_product_attention(
            q[None], keys[None], vals[None],  # [1, heads, len, D]
            attn_mask=plan.mask,
            is_causal=plan.is_causal,
            scale=self.scale,
            enable_gqa=self.num_kv_heads != self.num_heads,
        )[0]  # [Hq, T, D]

    def _attend_matmul(
        self,
        q: torch.Tensor,  # [Hq, T, D]
        keys: torch.Tensor,  # [Hkv, S, D]
        vals: torch.Tensor,  # [Hkv, S, D]
        mask: torch.Tensor | None,  # [T, S] additive (0 / -inf)
    ) -> torch.Tensor:
        """Attention as two batched matmuls and a float32 softmax (HF's eager attention
        numerics).  For a few queries over a long cache this reads K and V once with
        every SM busy, where a fused kernel may run one block per head."""
        groups = self.num_heads // self.num_kv_heads
        t = q.shape[1]
        qg = q.reshape(self.num_kv_heads, groups * t, self.head_dim)  # [Hkv, g*T, D]
        scores = torch.matmul(qg, keys.transpose(1, 2)) * self.scale  # [Hkv, g*T, S]
        scores = scores.view(self.num_kv_heads, groups, t, -1)  # [Hkv, g, T, S]
        if mask is not None:
            scores = scores + mask
        probs = torch.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype)
        out = torch.matmul(probs.view(self.num_kv_heads, groups * t, -1), vals)  # [Hkv, g*T, D]
        return out.view(self.num_heads, t, self.head_dim)  # [Hq, T, D]

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """``[T, H]`` -> float32 logits ``[T, V]`` through ``head``."""
        if self.head is None:
            raise RuntimeError("FastLlama was built without a head; pass head=lm_head")
        return self.head(hidden).float()
