"""A compact LLaMA decoder forward over a static KV cache, sharing a transformers model's
weights (gpt-fast style).

:class:`FastLlama` holds *references* to the modules of a transformers ``LlamaModel``
(``embed_tokens``, per layer ``q/k/v/o_proj``, ``mlp``, the two RMSNorms, the final
``norm``, the rotary embedding's ``inv_freq`` and ``attention_scaling``): no weight is
copied, so a model loaded 4-bit or moved later keeps working.  One call runs the whole
stack over ``T`` new positions::

    x [T, H] (embeddings, or token ids [T] looked up)
    per layer:  h = RMSNorm(x); q, k, v = proj(h) -> RoPE(q, k) at positions start + i
                k, v written into the cache at those positions
                attention of q over cache positions [0, kv_len) with mask
                    key j visible to query i  <=>  j <= start + i
                x = x + o_proj(attn);  x = x + mlp(RMSNorm(x))
    -> final RMSNorm -> hidden [T, H]

``start`` is a Python int or a one-element device tensor (so one CUDA graph serves every
position); ``kv_len`` is a static number of cache rows to attend over (>= start + T).
Rows in ``[start + T, kv_len)`` hold stale values and are masked.  ``attention`` picks
the kernel for steps (see :data:`ATTENTION_KINDS`; the benchmark measures both).  The cache's ``length``
pointer is *not* moved here: the caller decides which written positions become valid.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from evspec.models.fast.static_cache import StaticKVCache

#: RoPE variants whose frequencies are fixed at construction (read from the HF module);
#: ``dynamic`` / ``longrope`` change them with the sequence length and are not supported.
STATIC_ROPE_TYPES = ("default", "linear", "llama3", "yarn")

#: attention over the cache for steps (prefill from position 0 always uses causal SDPA):
#: ``sdpa`` = ``scaled_dot_product_attention`` with a boolean mask (a fused kernel);
#: ``matmul`` = two batched matmuls + float32 softmax (HF eager numerics)
ATTENTION_KINDS = ("sdpa", "matmul")


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
    :meth:`logits`.  Raises ``TypeError`` for a decoder that is not LLaMA-shaped and
    ``NotImplementedError`` for RoPE types or attention variants it does not implement.
    """

    def __init__(
        self, decoder: nn.Module, head: nn.Module | None = None, *, attention: str = "sdpa"
    ) -> None:
        if attention not in ATTENTION_KINDS:
            raise ValueError(
                f"FastLlama attention must be one of {', '.join(ATTENTION_KINDS)}, got {attention!r}"
            )
        self.attention = attention
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
        inv_freq = rotary.inv_freq.to(device=positions.device, dtype=torch.float32)  # [D/2]
        freqs = positions.float()[:, None] * inv_freq[None, :]  # [T, D/2]
        emb = torch.cat((freqs, freqs), dim=-1)  # [T, D]
        scaling = float(rotary.attention_scaling)
        return (emb.cos() * scaling).to(dtype), (emb.sin() * scaling).to(dtype)

    @staticmethod
    def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        """RoPE on ``x`` ``[heads, T, D]`` with ``cos``/``sin`` ``[T, D]`` (HF's rotate_half)."""
        half = x.shape[-1] // 2
        rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
        return x * cos + rotated * sin

    # -- the pass -------------------------------------------------------------------------
    def forward(
        self,
        cache: StaticKVCache,
        start: int | torch.Tensor,
        *,
        tokens: torch.Tensor | None = None,  # [T] int64
        embeds: torch.Tensor | None = None,  # [T, H]
        kv_len: int | None = None,
    ) -> torch.Tensor:
        """Hidden states ``[T, H]`` of positions ``start .. start + T - 1``; writes their
        keys/values into ``cache`` (its ``length`` is left to the caller).

        ``kv_len`` (default ``start + T``, int ``start`` only): cache rows attended over.
        """
        if (tokens is None) == (embeds is None):
            raise ValueError("FastLlama.forward takes exactly one of tokens or embeds")
        x = self.decoder.embed_tokens(tokens) if embeds is None else embeds  # [T, H]
        t = int(x.shape[0])
        device = x.device
        if isinstance(start, torch.Tensor):
            if kv_len is None:
                raise ValueError("kv_len is required when start is a device tensor")
            positions = start.reshape(1) + torch.arange(t, device=device)  # [T]
            causal_from_zero = False
        else:
            kv_len = start + t if kv_len is None else kv_len
            if not start + t <= kv_len <= cache.capacity:
                raise ValueError(
                    f"kv_len {kv_len} must cover the new positions (start {start} + {t}) and "
                    f"fit the cache capacity {cache.capacity}"
                )
            positions = torch.arange(start, start + t, device=device)  # [T]
            causal_from_zero = start == 0 and kv_len == t
        cos, sin = self.rope(positions, x.dtype)  # [T, D] each
        # no mask when every cached row is visible to every query, or plain causal from 0
        all_visible = not isinstance(start, torch.Tensor) and t == 1 and kv_len == start + 1
        mask = None
        if not (causal_from_zero or all_visible):
            keys = torch.arange(kv_len, device=device)  # [kv_len]
            mask = keys[None, :] <= positions[:, None]  # [T, kv_len] True = visible
        gqa = self.num_kv_heads != self.num_heads

        for i, layer in enumerate(self.layers):
            attn = layer.self_attn
            h = layer.input_layernorm(x)  # [T, H]
            q = attn.q_proj(h).view(t, self.num_heads, self.head_dim).transpose(0, 1)  # [Hq, T, D]
            k = attn.k_proj(h).view(t, self.num_kv_heads, self.head_dim).transpose(0, 1)  # [Hkv, T, D]
            v = attn.v_proj(h).view(t, self.num_kv_heads, self.head_dim).transpose(0, 1)  # [Hkv, T, D]
            q, k = self._rotate(q, cos, sin), self._rotate(k, cos, sin)
            cache.k[i].index_copy_(1, positions, k)  # rows start..start+T-1
            cache.v[i].index_copy_(1, positions, v)
            keys_i = cache.k[i, :, :kv_len]  # [Hkv, kv_len, D]
            vals_i = cache.v[i, :, :kv_len]
            if self.attention == "matmul" and not causal_from_zero:
                out = self._attend_matmul(q, keys_i, vals_i, mask)  # [Hq, T, D]
            else:
                out = F.scaled_dot_product_attention(
                    q[None], keys_i[None], vals_i[None],  # [1, heads, len, D]
                    attn_mask=mask,
                    is_causal=causal_from_zero and t > 1,
                    scale=self.scale,
                    enable_gqa=gqa,
                )[0]  # [Hq, T, D]
            out = out.transpose(0, 1).reshape(t, self.num_heads * self.head_dim)  # [T, Hq*D]
            x = x + attn.o_proj(out)
            x = x + layer.mlp(layer.post_attention_layernorm(x))
        return self.decoder.norm(x)  # [T, H]

    def _attend_matmul(
        self,
        q: torch.Tensor,  # [Hq, T, D]
        keys: torch.Tensor,  # [Hkv, S, D]
        vals: torch.Tensor,  # [Hkv, S, D]
        mask: torch.Tensor | None,  # [T, S] True = visible
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
            scores = scores.masked_fill(~mask, float("-inf"))
        probs = torch.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype)
        out = torch.matmul(probs.view(self.num_kv_heads, groups * t, -1), vals)  # [Hkv, g*T, D]
        return out.view(self.num_heads, t, self.head_dim)  # [Hq, T, D]

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """``[T, H]`` -> float32 logits ``[T, V]`` through ``head``."""
        if self.head is None:
            raise RuntimeError("FastLlama was built without a head; pass head=lm_head")
        return self.head(hidden).float()
