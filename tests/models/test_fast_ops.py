"""The fused path's elementwise functions against transformers' own (bit-identical in
float32 and bf16 on the CPU), the masks, and which attention form each pass takes
(plain causal / lower-right causal / additive mask / none), with parity of each form."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F
from transformers import LlamaConfig, LlamaModel
from transformers.activations import ACT2FN
from transformers.models.llama.modeling_llama import LlamaRMSNorm, apply_rotary_pos_emb
from torch.nn.attention.bias import CausalBias

from evspec.models.fast.llama import FastLlama
from evspec.models.fast.ops import (
    ACTIVATIONS,
    activation,
    apply_rope,
    attention_bias,
    gated,
    lower_right_causal,
    rms_norm,
    rope_tables,
    rotation_sin,
)

torch.set_num_threads(1)
DTYPES = [torch.float32, torch.bfloat16]


@pytest.mark.parametrize("dtype", DTYPES)
def test_rms_norm_is_hf_bit_for_bit(dtype: torch.dtype) -> None:
    torch.manual_seed(0)
    norm = LlamaRMSNorm(96, eps=1e-5).to(dtype)
    with torch.no_grad():
        norm.weight.normal_()
    x = (torch.randn(3, 5, 96) * 4).to(dtype)
    assert torch.equal(rms_norm(x, norm.weight, 1e-5), norm(x))


@pytest.mark.parametrize("dtype", DTYPES)
def test_rope_is_hf_bit_for_bit_on_joint_heads(dtype: torch.dtype) -> None:
    """RoPE applied once to q and k heads side by side equals HF's per-tensor formula."""
    torch.manual_seed(1)
    q, k = torch.randn(6, 4, 32).to(dtype), torch.randn(6, 2, 32).to(dtype)  # [T, heads, D]
    positions = torch.arange(1000, 1006)
    inv_freq = 1.0 / (10000 ** (torch.arange(0, 32, 2).float() / 32))
    cos, sin = rope_tables(positions, inv_freq, 1.3, dtype)
    ref_q, ref_k = apply_rotary_pos_emb(q.transpose(0, 1)[None], k.transpose(0, 1)[None], cos[None], sin[None])
    joint = apply_rope(torch.cat([q, k], dim=1), cos, rotation_sin(sin))  # [T, 6, D]
    assert torch.equal(joint[:, :4].transpose(0, 1)[None], ref_q)
    assert torch.equal(joint[:, 4:].transpose(0, 1)[None], ref_k)
    # the tables themselves are HF's rotary embedding (times attention_scaling)
    emb = torch.cat([positions.float()[:, None] * inv_freq] * 2, dim=-1)
    assert torch.equal(cos, (emb.cos() * 1.3).to(dtype)) and torch.equal(sin, (emb.sin() * 1.3).to(dtype))


def test_activations_match_hf_and_unknown_ones_are_refused() -> None:
    x = torch.randn(4, 10) * 3
    for name in ACTIVATIONS:
        assert torch.equal(activation(name, x), ACT2FN[name](x)), name
    gate_up = torch.randn(3, 8)
    assert torch.equal(gated("silu", gate_up), F.silu(gate_up[:, :4]) * gate_up[:, 4:])
    with pytest.raises(NotImplementedError, match="fuse=False"):
        activation("tanh", x)


def test_attention_bias_and_lower_right_causal() -> None:
    positions = torch.tensor([5, 6, 7])
    bias = attention_bias(positions, 10, torch.float32)  # [3, 10]
    visible = torch.arange(10)[None, :] <= positions[:, None]
    assert torch.equal(bias == 0, visible) and torch.isinf(bias[~visible]).all()
    torch.manual_seed(2)
    q, k, v = torch.randn(1, 2, 3, 8), torch.randn(1, 2, 8, 8), torch.randn(1, 2, 8, 8)
    lower_right = F.scaled_dot_product_attention(q, k, v, attn_mask=lower_right_causal(3, 8))
    explicit = F.scaled_dot_product_attention(q, k, v, attn_mask=attention_bias(torch.arange(5, 8), 8, torch.float32))
    torch.testing.assert_close(lower_right, explicit, atol=1e-6, rtol=0)


def _fast(kv_heads: int, attention: str = "sdpa") -> FastLlama:
    torch.manual_seed(3)
    cfg = LlamaConfig(vocab_size=40, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=kv_heads, max_position_embeddings=128)
    return FastLlama(LlamaModel(cfg).eval(), attention=attention)


def test_attention_plan_picks_the_cheapest_exact_form() -> None:
    mha, gqa = _fast(4), _fast(2)
    dt, cpu = torch.float32, torch.device("cpu")
    first = mha.attention_plan(0, 20, None, 64, dt, cpu)
    assert first.is_causal and first.mask is None and first.kv_len == 20  # flash from 0
    one = mha.attention_plan(30, 1, None, 64, dt, cpu)
    assert one.mask is None and not one.is_causal  # a single query sees every row
    suffix = mha.attention_plan(30, 7, None, 64, dt, cpu)
    assert isinstance(suffix.mask, CausalBias) and suffix.kv_len == 37  # no mask tensor
    assert isinstance(gqa.attention_plan(30, 7, None, 64, dt, cpu).mask, torch.Tensor)
    assert isinstance(_fast(4, "matmul").attention_plan(30, 7, None, 64, dt, cpu).mask, torch.Tensor)
    auto = _fast(4, "auto")  # head_dim 8, which the split-KV kernels do not take: sdpa for one query
    assert (auto.kernel_for(1), auto.kernel_for(7)) == ("sdpa", "matmul")  # (no mask), matmul (a mask) for several
    assert auto.attention_plan(30, 1, None, 64, dt, cpu).mask is None
    assert isinstance(auto.attention_plan(30, 7, None, 64, dt, cpu).mask, torch.Tensor)
    assert (mha.kernel_for(7), _fast(4, "matmul").kernel_for(1)) == ("sdpa", "matmul")
    padded = mha.attention_plan(30, 7, 48, 64, dt, cpu)
    assert isinstance(padded.mask, torch.Tensor) and padded.mask.shape == (7, 48)
    device_start = mha.attention_plan(torch.tensor(30), 2, 48, 64, dt, cpu)
    assert device_start.positions.tolist() == [30, 31] and device_start.mask.shape == (2, 48)
    with pytest.raises(ValueError, match="kv_len is required"):
        mha.attention_plan(torch.tensor(3), 2, None, 64, dt, cpu)
    with pytest.raises(ValueError, match="cover the new positions"):
        mha.attention_plan(30, 7, 36, 64, dt, cpu)


def test_split_kv_plans_build_no_mask_and_attend_like_the_mask() -> None:
    """Split-KV masks from the positions: its plans carry no mask tensor (no mask kernels in
    a step), and attend gives what SDPA gives with the mask."""
    from evspec.models.fast.step_attention import StepAttention

    gen = torch.Generator().manual_seed(5)
    dt, cpu = torch.float32, torch.device("cpu")
    split, sdpa = StepAttention("splitkv", 4, 2, 16, 0.25), StepAttention("sdpa", 4, 2, 16, 0.25)
    keys, vals = torch.randn(2, 64, 16, generator=gen), torch.randn(2, 64, 16, generator=gen)
    for start, t, kv_len in ((torch.tensor(30), 3, 48), (30, 7, 48), (torch.tensor(40), 1, 64)):
        plan, masked = split.plan(start, t, kv_len, 64, dt, cpu), sdpa.plan(start, t, kv_len, 64, dt, cpu)
        assert plan.split_kv and plan.mask is None and isinstance(masked.mask, torch.Tensor)
        q = torch.randn(4, t, 16, generator=gen)
        torch.testing.assert_close(split.attend(q, keys[:, :kv_len], vals[:, :kv_len], plan),
                                   sdpa.attend(q, keys[:, :kv_len], vals[:, :kv_len], masked), atol=1e-5, rtol=1e-5)
    assert not StepAttention("splitkv", 4, 2, 8, 0.25).plan(30, 7, 48, 64, dt, cpu).split_kv  # head_dim 8: a mask


def test_rope_rows_gather_the_same_values_from_tables() -> None:
    fast = _fast(4)
    positions = torch.tensor([0, 5, 63])
    cos, sin = fast.rope(positions, torch.float32)
    got = fast.rope_rows(positions, torch.float32, 64)
    assert torch.equal(got[0], cos) and torch.equal(got[1], rotation_sin(sin))
    first = fast._rope_cache[(positions.device, torch.float32)]
    bigger = fast.rope_rows(torch.tensor([100]), torch.float32, 128)  # a larger cache: a larger table
    assert torch.equal(bigger[0], fast.rope(torch.tensor([100]), torch.float32)[0])
    assert fast._rope_cache[(positions.device, torch.float32)][0].shape[0] == 128 and first in fast._rope_kept


@pytest.mark.parametrize("kv_heads", [4, 2])
def test_each_attention_form_gives_the_same_hidden_states(kv_heads: int) -> None:
    """A suffix after 20 cached positions: exact length (lower-right / mask), padded
    rows (mask), device start (mask), and the matmul kernel all agree."""
    model = _fast(kv_heads)
    other = FastLlama(model.decoder, attention="matmul")
    ids = torch.randint(0, 40, (27,), generator=torch.Generator().manual_seed(kv_heads))
    outs = []
    with torch.inference_mode():
        for fast, start_kind, kv_len in ((model, "int", None), (model, "int", 40),
                                         (model, "tensor", 48), (other, "int", None)):
            cache = fast.new_cache(64)
            fast.forward(cache, 0, tokens=ids[:20])
            start = 20 if start_kind == "int" else torch.tensor(20)
            outs.append(fast.forward(cache, start, tokens=ids[20:], kv_len=kv_len))
    for out in outs[1:]:
        torch.testing.assert_close(out, outs[0], atol=1e-5, rtol=0)
