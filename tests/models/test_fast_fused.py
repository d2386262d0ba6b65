"""Fused q/k/v and gate/up weights: the HF modules' weights become views of the fused
tensors (no extra memory), the HF forward is unchanged, the fused fast path matches the
HF ``LlamaModel`` (float32, 1e-5) for prefill and steps, fusion is reused or redone when
the weights were replaced, and unfusable models are refused by name."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaModel

from evspec.models.fast.fused import can_fuse
from evspec.models.fast.llama import FastLlama

torch.set_num_threads(1)
ATOL = 1e-5


def _llama(seed: int, *, kv_heads: int = 2, bias: bool = False, act: str = "silu") -> LlamaModel:
    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=40, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=kv_heads, max_position_embeddings=256,
        attention_bias=bias, mlp_bias=bias, hidden_act=act,
    )
    model = LlamaModel(cfg).eval()
    with torch.no_grad():  # non-trivial norms and biases, so a wrong slice shows
        for name, p in model.named_parameters():
            if name.endswith("bias") or "norm" in name:
                p.add_(torch.randn_like(p) * 0.3)
    return model


def _storage_bytes(model: torch.nn.Module) -> int:
    """Bytes of the distinct storages behind the parameters."""
    seen: dict[int, int] = {}
    for p in model.parameters():
        st = p.untyped_storage()
        seen[st.data_ptr()] = st.nbytes()
    return sum(seen.values())


def _inside(t: torch.Tensor, base: torch.Tensor) -> bool:
    lo = base.data_ptr()
    return lo <= t.data_ptr() and t.data_ptr() + t.numel() * t.element_size() <= lo + base.numel() * base.element_size()


def _reference(model: LlamaModel, ids: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return model(input_ids=ids[None]).last_hidden_state[0]


@pytest.mark.parametrize(("kv_heads", "bias"), [(2, False), (4, True), (1, False)])
def test_fused_weights_are_views_and_cost_no_memory(kv_heads: int, bias: bool) -> None:
    model = _llama(kv_heads, kv_heads=kv_heads, bias=bias)
    ids = torch.randint(0, 40, (19,), generator=torch.Generator().manual_seed(kv_heads))
    before_bytes = _storage_bytes(model)
    reference = _reference(model, ids)
    q_values = model.layers[0].self_attn.q_proj.weight.detach().clone()
    fast = FastLlama(model, fuse=True)
    assert fast.fused is not None and len(fast.fused) == 2
    assert _storage_bytes(model) == before_bytes  # the old q/k/v/gate/up tensors are gone
    for layer, f in zip(model.layers, fast.fused):
        attn, mlp = layer.self_attn, layer.mlp
        rows = 0
        for m in (attn.q_proj, attn.k_proj, attn.v_proj):
            assert _inside(m.weight, f.qkv_weight)
            assert m.weight.data_ptr() == f.qkv_weight[rows].data_ptr()  # in q, k, v order
            assert isinstance(m.weight, torch.nn.Parameter) and m.weight.requires_grad
            if bias:
                assert f.qkv_bias is not None and _inside(m.bias, f.qkv_bias)
            rows += m.weight.shape[0]
        assert rows == f.qkv_weight.shape[0]
        assert _inside(mlp.gate_proj.weight, f.gate_up_weight) and _inside(mlp.up_proj.weight, f.gate_up_weight)
        assert mlp.up_proj.weight.data_ptr() == f.gate_up_weight[mlp.gate_proj.weight.shape[0]].data_ptr()
        assert f.o_weight.data_ptr() == attn.o_proj.weight.data_ptr()
    assert torch.equal(model.layers[0].self_attn.q_proj.weight, q_values)
    # the HF forward reads the same values (float32: bit-identical) ...
    assert torch.equal(_reference(model, ids), reference)
    # ... and so does the fused path: one prefill, then steps at int and device starts
    with torch.inference_mode():
        cache = fast.new_cache(64, slack=8)
        a = fast.forward(cache, 0, tokens=ids[:9])
        cache.advance(9)
        b = fast.forward(cache, 9, tokens=ids[9:13])
        cache.advance(4)
        c = fast.forward(cache, torch.tensor(13), tokens=ids[13:], kv_len=32)
    torch.testing.assert_close(torch.cat([a, b, c]), reference, atol=ATOL, rtol=0)


def test_in_place_weight_changes_reach_both_paths() -> None:
    """One copy of each weight: a change through the HF module is seen by the fused path."""
    model = _llama(3)
    fast = FastLlama(model, fuse=True)
    ids = torch.arange(3, 15)
    with torch.no_grad():
        model.layers[1].self_attn.k_proj.weight.mul_(1.7)
        model.layers[0].mlp.up_proj.weight.add_(0.05)
    with torch.inference_mode():
        got = fast.forward(fast.new_cache(32), 0, tokens=ids)
    torch.testing.assert_close(got, _reference(model, ids), atol=ATOL, rtol=0)


def test_fusion_is_reused_then_redone_after_replacement() -> None:
    model = _llama(4)
    first = FastLlama(model, fuse=True)
    again = FastLlama(model, fuse=True)  # still in place: the same tensors, nothing copied
    assert again.fused[0].qkv_weight is first.fused[0].qkv_weight
    model.to(torch.float64)  # replaces every parameter: the old fusion no longer applies
    redone = FastLlama(model, fuse=True)
    assert redone.fused[0].qkv_weight is not first.fused[0].qkv_weight
    assert redone.fused[0].qkv_weight.dtype == torch.float64
    assert model.layers[0].self_attn.v_proj.weight.untyped_storage().data_ptr() == \
        redone.fused[0].qkv_weight.untyped_storage().data_ptr()
    ids = torch.arange(2, 12)
    with torch.inference_mode():
        got = redone.forward(redone.new_cache(32), 0, tokens=ids)
    torch.testing.assert_close(got, _reference(model, ids), atol=1e-10, rtol=0)


def test_fusion_under_inference_mode_keeps_the_model_trainable() -> None:
    model = _llama(5)
    with torch.inference_mode():
        FastLlama(model, fuse=True)
    w = model.layers[0].self_attn.q_proj.weight
    assert not w.is_inference() and w.requires_grad
    model(input_ids=torch.tensor([[1, 2, 3]])).last_hidden_state.sum().backward()
    assert w.grad is not None and w.grad.shape == w.shape


@pytest.mark.parametrize("act", ["gelu", "gelu_pytorch_tanh", "relu"])
def test_other_activations_match(act: str) -> None:
    model = _llama(6, act=act)
    ids = torch.arange(1, 14)
    with torch.inference_mode():
        fast = FastLlama(model, fuse=True)
        got = fast.forward(fast.new_cache(32), 0, tokens=ids)
    torch.testing.assert_close(got, _reference(model, ids), atol=ATOL, rtol=0)


def test_unfusable_models_are_named() -> None:
    class CustomLinear(torch.nn.Linear):
        pass

    model = _llama(7)
    old = model.layers[1].self_attn.k_proj
    custom = CustomLinear(old.in_features, old.out_features, bias=False)
    model.layers[1].self_attn.k_proj = custom
    assert "layer 1 k_proj is a CustomLinear" in can_fuse(model)
    with pytest.raises(ValueError, match="fuse=False"):
        FastLlama(model, fuse=True)
    FastLlama(model, fuse=False)  # the module path still takes it
    odd = _llama(8, act="tanh")
    assert "hidden_act 'tanh'" in can_fuse(odd)
    assert can_fuse(_llama(9)) is None
