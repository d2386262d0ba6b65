"""The fast engine: a static KV cache with O(1) rollback, a compact LLaMA
forward sharing the transformers weights (optionally over fused q/k/v and gate/up
weights, optionally compiled per layer), bucketed CUDA-graph steps, and the per-clip
prefix cache.  Everything is opt-in through ``CausalLMWrapper.enable_fast`` and
``enable_prefix_cache``; importing this package changes nothing."""

from evspec.models.fast.config import FastConfig
from evspec.models.fast.fused import FusedLayer, can_fuse
from evspec.models.fast.graphs import StepRunner
from evspec.models.fast.llama import FastLlama
from evspec.models.fast.prefix_cache import PrefixCache, PrefixKey, media_fingerprint
from evspec.models.fast.runtime import FastRuntime
from evspec.models.fast.static_cache import StaticKVCache

__all__ = [
    "FastConfig",
    "FastLlama",
    "FastRuntime",
    "FusedLayer",
    "PrefixCache",
    "PrefixKey",
    "StaticKVCache",
    "StepRunner",
    "can_fuse",
    "media_fingerprint",
]
