"""The prompt-prefix cache of :class:`~evspec.models.causal_lm.CausalLMWrapper`
(:class:`PrefixCacheMixin`): models whose prompt is ``prefix (media) + suffix (question)``
compute the prefix once per ``Request.clip_id`` and restore its KV for later questions on
the same clip, on the dynamic cache or the fast path's static cache alike.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from transformers import DynamicCache

from evspec.models.fast.prefix_cache import PrefixCache, PrefixEntry, PrefixKey
from evspec.models.fast.runtime import FastRuntime
from evspec.models.fast.static_cache import StaticKVCache
from evspec.models.state import TargetState
from evspec.models.timing import timed

#: builds the prompt prefix: (timings to fill) -> (prefix embeddings [P, H], extras)
PrefixBuilder = Callable[[dict[str, float]], tuple[torch.Tensor, dict[str, Any]]]


class PrefixCacheMixin:
    """Prefix-cache switches and the prefixed prefill, mixed into ``CausalLMWrapper``
    (whose ``_fast``, ``device``, ``_run``, ``_head`` and ``_check_prompt_fits`` they use).
    Off until :meth:`enable_prefix_cache`."""

    _fast: FastRuntime | None
    _prefix_cache: PrefixCache | None = None

    def enable_prefix_cache(self, max_clips: int = 1) -> PrefixCache:
        """Reuse the prompt prefix (media features + their KV) across questions on the
        same ``Request.clip_id`` (None = never cached), keeping ``max_clips`` clips (LRU)."""
        self._prefix_cache = PrefixCache(max_clips)
        return self._prefix_cache

    def disable_prefix_cache(self) -> None:
        self._prefix_cache = None

    @property
    def prefix_cache(self) -> PrefixCache | None:
        return self._prefix_cache

    def _prefill_prefixed(
        self,
        key: PrefixKey,
        prompt_ids: torch.Tensor,  # [L] (placeholders expanded)
        split: int,
        build_prefix: PrefixBuilder,
        suffix_embeds: Callable[[], torch.Tensor],
        *,
        return_hidden: bool,
        timings: dict[str, float],
    ) -> TargetState:
        """Prefill ``prompt_ids[:split]`` (the media prefix) from the prefix cache when
        ``key`` is there, else build it (``build_prefix`` records its own timings, e.g.
        ``vision_ms``) and store it; then the suffix ``prompt_ids[split:]`` (embedded by
        ``suffix_embeds`` -> ``[L - split, H]``) in one more pass.

        Hit or miss, the computation is the same two passes, so the output does not
        depend on the cache.  ``timings['prefill_ms']`` covers the decoder work done
        (the suffix only on a hit) and ``timings['prefix_hit']`` says which; ``extra``
        receives the prefix builder's extras (e.g. media features).
        """
        store = self._prefix_cache
        if store is None:
            raise RuntimeError("_prefill_prefixed needs enable_prefix_cache()")
        length = int(prompt_ids.numel())
        if not 0 < split <= length:
            raise ValueError(f"prefix split {split} outside (0, {length}]")
        self._check_prompt_fits(length)
        fast = self._fast
        entry = store.get(key, "static" if fast is not None else "dynamic")
        hit = entry is not None
        cache: Any = fast.acquire(prefer=key) if fast is not None else DynamicCache()
        try:
            if entry is None:
                prefix, extra = build_prefix(timings)  # [split, H]
                if int(prefix.shape[0]) != split:
                    raise RuntimeError(
                        f"prefix builder returned {prefix.shape[0]} embeddings, expected {split}"
                    )
                with timed(self.device, timings, "prefill_ms"):
                    entry = self._store_prefix(key, cache, prefix, extra)
                store.put(entry)
            else:
                with timed(self.device, timings, "prefill_ms"):
                    self._restore_prefix(entry, cache)
            last_logits, last_hidden = entry.last_logits, entry.last_hidden
            if split < length:
                with timed(self.device, timings, "prefill_ms"):
                    with torch.inference_mode():
                        suffix = suffix_embeds()  # [L - split, H]
                    if fast is not None:
                        last = fast.prefill(cache, suffix)[-1:]  # [1, H]
                        logits = self._head(last)
                    else:
                        logits, last = self._run(cache, inputs_embeds=suffix, last_only=True, return_hidden=True)
                last_logits, last_hidden = logits[0], last[0]
            timings["prefix_hit"] = hit
            state = TargetState(
                cache=cache,
                length=length,
                last_logits=last_logits,
                prompt_ids=prompt_ids.cpu(),
                last_hidden=last_hidden if return_hidden else None,
                timings=timings,
                extra={**entry.extra, "prefix_hit": hit, "prefix_len": split},
            )
        except BaseException:
            if fast is not None:
                fast.release(cache)
            raise
        if fast is not None:
            fast.bind(cache, state)
        return state

    @torch.inference_mode()
    def _store_prefix(
        self, key: PrefixKey, cache: Any, prefix: torch.Tensor, extra: dict[str, Any]
    ) -> PrefixEntry:
        """Run the prefix ``[P, H]`` into an empty ``cache`` and keep its KV."""
        n = int(prefix.shape[0])
        if isinstance(cache, StaticKVCache):
            assert self._fast is not None
            last = self._fast.prefill(cache, prefix)[-1:]  # [1, H]
            logits = self._head(last)
            cache.prefix_key, cache.prefix_len = key, n
            kv_data: Any = cache.export_prefix(n)
            kind = "static"
        else:
            logits, last = self._run(cache, inputs_embeds=prefix, last_only=True, return_hidden=True)
            # DynamicLayer never writes its tensors in place (it concatenates): keep them
            kv_data = [(layer.keys, layer.values) for layer in cache.layers]
            kind = "dynamic"
        return PrefixEntry(key, n, kind, kv_data, logits[0], last[0], dict(extra))

    @torch.inference_mode()
    def _restore_prefix(self, entry: PrefixEntry, cache: Any) -> None:
        """Put ``entry``'s KV into a fresh ``cache`` (in place when it is still there)."""
        if isinstance(cache, StaticKVCache):
            if cache.prefix_key == entry.key and cache.prefix_len == entry.length:
                cache.restore(entry.length)
            else:
                cache.import_prefix(*entry.kv)
                cache.prefix_key, cache.prefix_len = entry.key, entry.length
            return
        for i, (k, v) in enumerate(entry.kv):  # each [1, kv_heads, P, head_dim]
            cache.update(k, v, i)
