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
Masking is decided once per pass and shared by all layers, and ``attention`` picks the
kernel of masked passes (:mod:`.step_attention`).  The
cache's ``length`` pointer is *not* moved here: the caller decides which written
positions become valid.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from evspec.models.fast import triton_layer
from evspec.models.fast.fused import FusedLayer, fuse_decoder
from evspec.models.fast.layer import (
    attention_inputs,
    attention_inputs_any_length,
    attention_output_and_mlp,
    attention_output_and_mlp_any_length,
)
from evspec.models.fast.ops import (
    apply_rope,
    rms_norm,
    rope_tables,
    rotation_sin,
)
from evspec.models.fast.decode_attention import exact_fits
from evspec.models.fast.gemv import fused_linear
from evspec.models.fast.static_cache import StaticKVCache
from evspec.models.fast.step_attention import AttentionPlan, StepAttention
from evspec.models.fast.triton_support import available as triton_available

#: RoPE variants whose frequencies are fixed at construction (read from the HF module);
#: ``dynamic`` / ``longrope`` change them with the sequence length and are not supported.
STATIC_ROPE_TYPES = ("default", "linear", "llama3", "yarn")

#: the layer functions of a step: ``torch`` = :mod:`.layer` (eager or compiled); ``triton`` =
#: :mod:`.triton_layer` (four row-invariant Triton kernels) for decode and score steps, ``torch``
#: for prefills (opt-in)
KERNEL_KINDS = ("torch", "triton")


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
    functions of :mod:`.layer` (see the module docstring); ``exact``: masked passes of up to
    16 tokens (decode and score steps) attend row-invariantly (:class:`StepAttention`).
    Raises ``TypeError`` for a
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
        exact: bool = False,
    ) -> None:
        if kernels not in KERNEL_KINDS:
            raise ValueError(f"FastLlama kernels must be one of {', '.join(KERNEL_KINDS)}, got {kernels!r}")
        if kernels == "triton" and not fuse:
            raise ValueError("kernels='triton' runs the fused layer: build FastLlama with fuse=True")
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
        self.attn = StepAttention(attention, self.num_heads, self.num_kv_heads, self.head_dim,
                                  self.scale, exact=exact)
        self.fused: list[FusedLayer] | None = fuse_decoder(decoder, self.layers) if fuse else None
        if kernels == "triton":
            f = self.fused[0]
            why = triton_layer.supported(self.head_dim, f.act, any(
                b is not None for b in (f.qkv_bias, f.o_bias, f.gate_up_bias, f.down_bias)))
            if why is not None:
                raise ValueError(f"kernels='triton' does not take this model: {why}")
        self._rope_cache: dict[tuple[torch.device, torch.dtype], tuple[torch.Tensor, torch.Tensor]] = {}
        self._rope_kept: list[tuple[torch.Tensor, torch.Tensor]] = []
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

    def rope_rows(self, positions: torch.Tensor, dtype: torch.dtype, rows: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(cos, rotation_sin(sin))`` ``[T, head_dim]`` of :meth:`rope`, gathered from tables
        of positions ``0 .. rows - 1`` made once per device and dtype (two gathers a step
        instead of about ten elementwise kernels; the same values: each row is computed
        alone).  ``positions`` must be below ``rows``."""
        key = (positions.device, dtype)
        table = self._rope_cache.get(key)
        if table is None or table[0].shape[0] < rows:
            cos, sin = self.rope(torch.arange(rows, device=positions.device), dtype)
            table = (cos, rotation_sin(sin))
            self._rope_cache[key] = table
            self._rope_kept.append(table)  # graphs captured with an older table still read it
        return table[0].index_select(0, positions), table[1].index_select(0, positions)

    def attention_plan(
        self, start: int | torch.Tensor, t: int, kv_len: int | None, capacity: int, dtype: torch.dtype,
        device: torch.device,
    ) -> AttentionPlan:
        """Positions and masking of a pass of ``t`` tokens at ``start`` (:class:`StepAttention`)."""
        return self.attn.plan(start, t, kv_len, capacity, dtype, device)

    def kernel_for(self, queries: int, device: torch.device | None = None) -> str:
        """The kernel a masked pass of ``queries`` tokens on ``device`` (default: the
        model's) uses (:class:`StepAttention`)."""
        return self.attn.kernel_for(queries, device or self.device)

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
        prenorm: bool = False,
    ) -> torch.Tensor:
        """Hidden states ``[T, H]`` of positions ``start .. start + T - 1``; writes their
        keys/values into ``cache`` (its ``length`` is left to the caller).  ``prenorm``: the
        residual stream before the final RMSNorm instead (:meth:`step_logits` takes it).

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
        # [T, D] each, sin first half negated (see ops.apply_rope)
        cos, sin = self.rope_rows(plan.positions, x.dtype, cache.capacity)
        if self.fused is None:
            for i, layer in enumerate(self.layers):
                x = self._layer_modules(layer, x, cos, sin, cache.k[i], cache.v[i], plan)
            return x if prenorm else self.decoder.norm(x)  # [T, H]
        pre, post = attention_inputs, attention_output_and_mlp
        dynamic = compiled and any_length and self._compiled_any is not None
        if self.kernels == "triton" and not any_length and t <= triton_layer.STEP_ROWS:
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
            out = self.attn.attend(q, cache.k[i, :, : plan.kv_len], cache.v[i, :, : plan.kv_len], plan)
            if dynamic:
                torch._dynamo.maybe_mark_dynamic(x, 0)
                torch._dynamo.maybe_mark_dynamic(out, 1)
            x = post(x, out, f.o_weight, f.o_bias, f.ln2_weight, f.gate_up_weight, f.gate_up_bias,
                     f.down_weight, f.down_bias, f.ln2_eps, f.act)  # [T, H]
        return x if prenorm else self.final_norm(x)  # [T, H]

    def final_norm(self, x: torch.Tensor) -> torch.Tensor:
        """The decoder's final RMSNorm of the residual stream ``[T, H]``."""
        if self.fused is None:
            return self.decoder.norm(x)
        return rms_norm(x, self.decoder.norm.weight, self._final_eps)

    def triton_head(self, rows: int, device: torch.device) -> bool:
        """Whether :meth:`step_logits` of ``rows`` rows runs the final norm and the head as one
        row-invariant Triton GEMV (the Triton layer kernels, a plain bias-free head)."""
        head = self.head
        return (self.kernels == "triton" and rows <= triton_layer.STEP_ROWS
                and triton_available(device) and isinstance(head, nn.Linear) and head.bias is None
                and self.fused is not None)

    def row_invariant_steps(self, device: torch.device | None = None) -> bool:
        """Whether every step of up to 16 tokens on ``device`` (default: the model's) runs
        row-invariant kernels only (Triton layers, head and split-KV attention), so steps of
        any size give a position the same logits without padding to one row bucket."""
        device = device or self.device
        return self.triton_head(triton_layer.STEP_ROWS, device) and exact_fits(
            self.num_heads, self.num_kv_heads, self.head_dim)

    def step_logits(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(logits [T, V] float32, hidden [T, H])`` from the residual stream ``[T, H]``
        (``forward(prenorm=True)``): the final norm and the head, as one row-invariant Triton
        GEMV where :meth:`triton_head` says so (the logits then do not depend on ``T``)."""
        hidden = self.final_norm(x)
        if self.triton_head(int(x.shape[0]), x.device):
            logits = fused_linear(x, self.head.weight, self.decoder.norm.weight, self._final_eps)
            return logits.float(), hidden
        return self.logits(hidden), hidden

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
        out = self.attn.attend(q, k_cache[:, : plan.kv_len], v_cache[:, : plan.kv_len], plan)  # [Hq, T, D]
        x = x + attn.o_proj(out.transpose(0, 1).reshape(t, self.num_heads * self.head_dim))
        return x + layer.mlp(layer.post_attention_layernorm(x))

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """``[T, H]`` -> float32 logits ``[T, V]`` through ``head``."""
        if self.head is None:
            raise RuntimeError("FastLlama was built without a head; pass head=lm_head")
        return self.head(hidden).float()
