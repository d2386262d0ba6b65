"""The static KV cache and the compact LLaMA forward: parity with transformers'
``LlamaModel`` (float32, tiny configs) for prefill and for incremental steps after
rollbacks; O(1) rollback, snapshot/restore and prefix export/import of the cache."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaModel

from evspec.models import kv
from evspec.models.fast.llama import FastLlama
from evspec.models.fast.static_cache import StaticKVCache

torch.set_num_threads(1)
ATOL = 1e-5


def _llama(seed: int, *, kv_heads: int = 2, rope: dict | None = None, layers: int = 2) -> LlamaModel:
    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=40, hidden_size=32, intermediate_size=48, num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=kv_heads, max_position_embeddings=256,
        rope_parameters=rope,
    )
    return LlamaModel(cfg).eval()


def _reference(model: LlamaModel, ids: list[int]) -> torch.Tensor:
    """Cache-free HF forward: last_hidden_state ``[L, H]``."""
    with torch.inference_mode():
        return model(input_ids=torch.tensor([ids])).last_hidden_state[0]


# -- the cache ------------------------------------------------------------------------------


def _cache(max_len: int = 10, slack: int = 3) -> StaticKVCache:
    return StaticKVCache.allocate(
        layers=2, kv_heads=1, head_dim=4, max_len=max_len, slack=slack,
        dtype=torch.float32, device="cpu",
    )


def test_cache_shapes_and_pointer() -> None:
    c = _cache()
    assert tuple(c.k.shape) == (2, 1, 13, 4) and c.capacity == 13 and c.max_len == 10
    c.advance(6)
    ptr = c.k.data_ptr()
    c.rollback(4)  # O(1): only the pointer moves, the buffer is the same object
    assert c.length == 2 and c.k.data_ptr() == ptr and kv.cache_length(c) == 2
    kv.rollback(c, 1)  # the shared helper (negative crop) works on it
    assert c.length == 1
    c.crop(5)  # HF semantics: keep the first 5 (more than held: no-op)
    assert c.length == 1
    snap = c.snapshot()
    c.advance(7)
    c.restore(snap)
    assert c.length == 1 and c.room() == 9


def test_cache_errors_name_the_fix() -> None:
    c = _cache()
    with pytest.raises(ValueError, match="max_len"):
        c.advance(11)
    with pytest.raises(ValueError, match="roll back 1"):
        c.rollback(1)
    with pytest.raises(ValueError, match="slack must be >= 0"):
        StaticKVCache.allocate(layers=1, kv_heads=1, head_dim=2, max_len=4, slack=-1,
                               dtype=torch.float32, device="cpu")
    with pytest.raises(ValueError, match="one shape"):
        StaticKVCache(k=torch.zeros(1, 1, 4, 2), v=torch.zeros(1, 1, 5, 2), max_len=4)


def test_cache_prefix_export_import_and_invalidation() -> None:
    c = _cache()
    c.k.normal_()
    c.v.normal_()
    c.advance(5)
    k, v = c.export_prefix(3)
    assert tuple(k.shape) == (2, 1, 3, 4)
    other = _cache()
    other.import_prefix(k, v)
    assert other.length == 3 and torch.equal(other.k[:, :, :3], c.k[:, :, :3])
    assert torch.equal(other.v[:, :, :3], c.v[:, :, :3])
    k[0, 0, 0, 0] += 1  # an export is a copy
    assert not torch.equal(k, c.k[:, :, :3])
    c.prefix_key, c.prefix_len = "clip", 3
    c.invalidate_prefix_from(3)  # writes after the prefix keep it
    assert c.prefix_key == "clip"
    c.invalidate_prefix_from(2)  # writes inside it drop it
    assert c.prefix_key is None and c.prefix_len == 0
    with pytest.raises(ValueError, match="does not match"):
        other.import_prefix(torch.zeros(1, 1, 3, 4), torch.zeros(1, 1, 3, 4))


# -- the forward ----------------------------------------------------------------------------


@pytest.mark.parametrize("kv_heads", [4, 2, 1])
def test_prefill_parity_with_hf(kv_heads: int) -> None:
    """MHA, GQA and MQA: one prefill pass equals the HF last_hidden_state."""
    model = _llama(seed=kv_heads, kv_heads=kv_heads)
    fast = FastLlama(model)
    ids = torch.randint(0, 40, (23,), generator=torch.Generator().manual_seed(kv_heads))
    cache = fast.new_cache(64, slack=4)
    with torch.inference_mode():
        hidden = fast.forward(cache, 0, tokens=ids)
    torch.testing.assert_close(hidden, _reference(model, ids.tolist()), atol=ATOL, rtol=0)
    # the embeds entry point gives the same
    with torch.inference_mode():
        again = fast.forward(fast.new_cache(64), 0, embeds=model.embed_tokens(ids))
    torch.testing.assert_close(again, hidden, atol=ATOL, rtol=0)


@pytest.mark.parametrize(("seed", "attention", "kv_heads"), [
    (0, "sdpa", 2), (1, "sdpa", 4), (2, "matmul", 2), (3, "matmul", 1), (4, "matmul", 4),
    (5, "auto", 4), (6, "auto", 2), (7, "splitkv", 4), (8, "splitkv", 1),
])
def test_incremental_steps_after_rollbacks_match_hf(seed: int, attention: str, kv_heads: int) -> None:
    """Random steps of 1-6 tokens with random rollbacks; after every step the hidden
    states of the new positions equal a cache-free HF forward over the kept sequence.
    Steps use int starts, device-tensor starts and padded kv lengths; every attention
    kind (``auto`` mixes both kernels by step size), MHA/GQA/MQA."""
    gen = torch.Generator().manual_seed(seed)
    model = _llama(seed=10 + seed, kv_heads=kv_heads)
    fast = FastLlama(model, attention=attention)
    cache = fast.new_cache(96, slack=8)
    seq = torch.randint(0, 40, (8,), generator=gen).tolist()
    with torch.inference_mode():
        fast.forward(cache, 0, tokens=torch.tensor(seq))
    cache.advance(len(seq))
    for step in range(10):
        t = int(torch.randint(1, 7, (1,), generator=gen))
        new = torch.randint(0, 40, (t,), generator=gen).tolist()
        start = cache.length
        with torch.inference_mode():
            if step % 3 == 0:
                hidden = fast.forward(cache, start, tokens=torch.tensor(new))
            elif step % 3 == 1:  # a device-tensor start and extra (masked) rows
                hidden = fast.forward(cache, torch.tensor([start]), tokens=torch.tensor(new),
                                      kv_len=min(cache.capacity, start + t + 5))
            else:
                hidden = fast.forward(cache, start, tokens=torch.tensor(new), kv_len=cache.capacity)
        cache.advance(t)
        seq += new
        ref = _reference(model, seq)[-t:]
        torch.testing.assert_close(hidden, ref, atol=ATOL, rtol=0)
        drop = int(torch.randint(0, t + 1, (1,), generator=gen))
        cache.rollback(drop)  # stale rows stay in the buffer: the mask must hide them
        del seq[len(seq) - drop :]


def test_rope_scaling_types_follow_the_config() -> None:
    """Static RoPE variants (frequencies read from the HF module) match; dynamic ones
    are refused with a clear error."""
    for rope in (
        {"rope_type": "linear", "factor": 2.0, "rope_theta": 10000.0},
        {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
         "original_max_position_embeddings": 64, "rope_theta": 500000.0},
    ):
        model = _llama(seed=5, rope=rope)
        ids = list(range(3, 33))
        with torch.inference_mode():
            hidden = FastLlama(model).forward(FastLlama(model).new_cache(64), 0, tokens=torch.tensor(ids))
        torch.testing.assert_close(hidden, _reference(model, ids), atol=ATOL, rtol=0)
    dynamic = _llama(seed=6, rope={"rope_type": "dynamic", "factor": 2.0, "rope_theta": 10000.0})
    with pytest.raises(NotImplementedError, match="dynamic"):
        FastLlama(dynamic)


def test_weights_are_shared_not_copied() -> None:
    model = _llama(seed=7)
    fast = FastLlama(model)
    ids = torch.arange(3, 13)
    with torch.inference_mode():
        before = fast.forward(fast.new_cache(32), 0, tokens=ids)
        model.layers[1].mlp.down_proj.weight.mul_(2.0)
        after = fast.forward(fast.new_cache(32), 0, tokens=ids)
    assert not torch.allclose(before, after)
    torch.testing.assert_close(after, _reference(model, ids.tolist()), atol=ATOL, rtol=0)


def test_bad_decoder_is_named() -> None:
    with pytest.raises(TypeError, match="lacks"):
        FastLlama(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="sdpa, matmul"):
        FastLlama(_llama(seed=8), attention="flash")
