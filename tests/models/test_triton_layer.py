"""The four-kernel layer: with the same signatures as the ``layer.py`` functions it gives the
same q, cache rows and residual stream (float32), for MHA and GQA and steps of 1-16 tokens at
any positions; unsupported layers and long passes fall back to ``layer.py``.  The kernels
themselves run on a GPU, or on the CPU under ``TRITON_INTERPRET=1`` with Triton installed;
elsewhere the fallback is what runs (and is checked)."""

from __future__ import annotations

import pytest
import torch

from evspec.models.fast.triton_support import available as triton_available
from evspec.models.fast.layer import attention_inputs, attention_output_and_mlp
from evspec.models.fast.ops import rope_tables, rotation_sin
from evspec.models.fast.triton_layer import (
    rotary_split,
    supported,
    triton_attention_inputs,
    triton_attention_output_and_mlp,
)

pytestmark = pytest.mark.triton_kernels  # the kernels run under TRITON_INTERPRET=1 on a CPU


def _layer(hidden: int, heads: int, kv_heads: int, inter: int, device: torch.device, seed: int):
    gen = torch.Generator(device=device).manual_seed(seed)
    d = hidden // heads

    def r(*shape, s=1.0):
        return torch.randn(*shape, generator=gen, device=device) * s

    return {
        "d": d,
        "ln1": 1 + 0.1 * r(hidden), "ln2": 1 + 0.1 * r(hidden),
        "qkv": r((heads + 2 * kv_heads) * d, hidden, s=hidden ** -0.5),
        "o": r(hidden, heads * d, s=hidden ** -0.5),
        "gate_up": r(2 * inter, hidden, s=hidden ** -0.5),
        "down": r(hidden, inter, s=inter ** -0.5),
    }


@pytest.mark.parametrize("heads, kv_heads, t, start", [(2, 2, 1, 37), (1, 1, 1, 20), (4, 2, 9, 50), (2, 1, 16, 3)])
def test_layer_matches_the_torch_layer(heads: int, kv_heads: int, t: int, start: int) -> None:
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    hidden, inter, cap = 128, 96, 80
    p = _layer(hidden, heads, kv_heads, inter, dev, seed=heads * 10 + t)
    d = p["d"]
    gen = torch.Generator(device=dev).manual_seed(t)
    x = torch.randn(t, hidden, generator=gen, device=dev)
    positions = start + torch.arange(t, device=dev)
    inv_freq = 1.0 / (10000 ** (torch.arange(0, d, 2, device=dev).float() / d))
    cos, sin = rope_tables(positions, inv_freq, 1.0, x.dtype)
    sin = rotation_sin(sin)
    caches = [torch.randn(kv_heads, cap, d, generator=gen, device=dev) for _ in range(2)]
    mine = [c.clone() for c in caches]
    args = (x, p["ln1"], p["qkv"], None, cos, sin)
    want_q = attention_inputs(*args, *caches, positions, 1e-5, heads, kv_heads)
    got_q = triton_attention_inputs(*args, *mine, positions, 1e-5, heads, kv_heads)
    torch.testing.assert_close(got_q, want_q, atol=1e-4, rtol=1e-4)
    for a, b in zip(mine, caches):  # the new rows written, every other row untouched
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    attn = torch.randn(heads, t, d, generator=gen, device=dev)
    mlp = (x, attn, p["o"], None, p["ln2"], p["gate_up"], None, p["down"], None, 1e-5, "silu")
    torch.testing.assert_close(triton_attention_output_and_mlp(*mlp), attention_output_and_mlp(*mlp),
                               atol=1e-4, rtol=1e-4)


def test_what_the_kernels_do_not_take() -> None:
    assert supported(128, "silu", False) is None and supported(32, "swish", False) is None
    assert "biases" in supported(128, "silu", True)
    assert "activation" in supported(128, "gelu", False)
    assert "head_dim" in supported(16, "silu", False) and "head_dim" in supported(96, "silu", False)
    assert [rotary_split(d) for d in (128, 64, 32, 16)] == [32, 16, 1, None]  # 2 columns a half
    assert [rotary_split(d, rows=1) for d in (128, 64, 32)] == [16, 8, 1]  # 4 columns a program


@pytest.mark.skipif(not triton_available(torch.device("cuda" if torch.cuda.is_available() else "cpu")),
                    reason="needs Triton on a GPU, or TRITON_INTERPRET=1")
def test_kernels_really_ran_and_wrote_only_the_step_rows() -> None:
    """A cache poisoned with NaN outside the step's rows stays NaN there: the kernel wrote
    exactly rows ``start .. start + T - 1`` (the torch fallback would too, but this runs the kernel)."""
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    p = _layer(64, 2, 2, 32, dev, seed=5)
    d, t, start = p["d"], 3, 10
    x = torch.randn(t, 64, device=dev)
    positions = start + torch.arange(t, device=dev)
    cos, sin = rope_tables(positions, torch.ones(d // 2, device=dev), 1.0, x.dtype)
    kc, vc = torch.full((2, 20, d), float("nan"), device=dev), torch.full((2, 20, d), float("nan"), device=dev)
    triton_attention_inputs(x, p["ln1"], p["qkv"], None, cos, rotation_sin(sin), kc, vc, positions, 1e-5, 2, 2)
    for c in (kc, vc):
        assert not c[:, start:start + t].isnan().any() and c[:, :start].isnan().all() and c[:, start + t:].isnan().all()


@pytest.mark.parametrize("kv_heads", [2, 1])
def test_fast_llama_with_triton_kernels_matches_hf(kv_heads: int) -> None:
    """``FastLlama(kernels="triton", attention="splitkv")``: a prefill (the torch path), then
    steps of 1-5 tokens with rollbacks at int and device starts (one-token steps run the
    kernels where Triton runs, the rest the torch layer) equal a cache-free HF forward."""
    from transformers import LlamaConfig, LlamaModel

    from evspec.models.fast.llama import FastLlama

    torch.manual_seed(kv_heads)
    cfg = LlamaConfig(vocab_size=40, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=kv_heads, max_position_embeddings=256)
    model = LlamaModel(cfg).eval()
    fast = FastLlama(model, attention="splitkv", fuse=True, kernels="triton")
    cache = fast.new_cache(96, slack=16)
    gen = torch.Generator().manual_seed(kv_heads)
    seq = torch.randint(0, 40, (11,), generator=gen).tolist()
    with torch.inference_mode():
        fast.forward(cache, 0, tokens=torch.tensor(seq))
        cache.advance(len(seq))
        for step in range(6):
            t = int(torch.randint(1, 6, (1,), generator=gen))
            new = torch.randint(0, 40, (t,), generator=gen).tolist()
            start = cache.length if step % 2 else torch.tensor([cache.length])
            hidden = fast.forward(cache, start, tokens=torch.tensor(new), kv_len=min(cache.capacity, cache.length + 16))
            cache.advance(t)
            seq += new
            want = model(input_ids=torch.tensor([seq])).last_hidden_state[0, -t:]
            torch.testing.assert_close(hidden, want, atol=1e-4, rtol=1e-4)
            drop = int(torch.randint(0, t + 1, (1,), generator=gen))
            cache.rollback(drop)
            del seq[len(seq) - drop:]


def test_triton_kernels_are_validated() -> None:
    from transformers import LlamaConfig, LlamaModel

    from evspec.models.fast.config import FastConfig
    from evspec.models.fast.llama import FastLlama

    small = LlamaModel(LlamaConfig(vocab_size=40, hidden_size=32, intermediate_size=48, num_hidden_layers=1,
                                   num_attention_heads=4, num_key_value_heads=4)).eval()  # head_dim 8
    with pytest.raises(ValueError, match="head_dim 8"):
        FastLlama(small, fuse=True, kernels="triton")
    with pytest.raises(ValueError, match="fuse=True"):
        FastLlama(small, kernels="triton")
    with pytest.raises(ValueError, match="kernels must be one of"):
        FastLlama(small, fuse=True, kernels="cuda")
    with pytest.raises(ValueError, match="set fuse=True"):
        FastConfig(max_len=32, kernels="triton")
    with pytest.raises(ValueError, match="kernels must be one of"):
        FastConfig(max_len=32, fuse=True, kernels="cutlass")
