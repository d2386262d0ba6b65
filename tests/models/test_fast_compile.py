"""The compiled fast path: the per-layer functions compile once per step bucket (not per
layer, position or kv bucket), the compiled steps equal the eager fused steps, the cache
rows are written in place (no copy of the cache), and the options are validated.

Tracing is checked with the ``aot_eager`` backend (dynamo + functionalisation, no code
generation: fast); one test runs real inductor code generation on the CPU."""

from __future__ import annotations

import pytest
import torch
from torch._dynamo.utils import counters
from transformers import LlamaConfig, LlamaForCausalLM

from evspec.models.fast.config import FastConfig
from evspec.models.fast.graphs import StepRunner
from evspec.models.fast.llama import FastLlama

torch.set_num_threads(1)
ATOL = 1e-5
#: inductor's CPU code path imports a deprecated TorchScript helper; not ours to fix
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")


def _model(seed: int, layers: int = 3) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=48, hidden_size=32, intermediate_size=64, num_hidden_layers=layers,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)
    return LlamaForCausalLM(cfg).eval()


def _runners(model: LlamaForCausalLM, buckets: tuple[int, ...], backend: str, *, prefill: bool = True):
    compiled = FastLlama(model.model, model.lm_head, fuse=True)
    compiled.compile(backend=backend, prefill=prefill)
    eager = FastLlama(model.model, model.lm_head, fuse=True)
    with torch.inference_mode():
        cache_c, cache_e = compiled.new_cache(96, slack=16), eager.new_cache(96, slack=16)
    run_c = StepRunner(compiled, cache_c, buckets=buckets, kv_granularity=16, cuda_graphs=False,
                       compile=True, compile_backend=backend)
    run_e = StepRunner(eager, cache_e, buckets=buckets, kv_granularity=16, cuda_graphs=False)
    return (run_c, cache_c), (run_e, cache_e)


def _steps(pairs, sizes: list[int], seed: int) -> None:
    """A prompt (compiled for any length on the compiled side), then the same steps
    through both runners; hidden states, logits and cache rows must agree."""
    (run_c, cache_c), (run_e, cache_e) = pairs
    gen = torch.Generator().manual_seed(seed)
    k_ptr = cache_c.k.data_ptr()
    with torch.inference_mode():
        prompt = torch.randint(0, 48, (9,), generator=gen)
        got = run_c.model.forward(cache_c, 0, tokens=prompt, compiled=True, any_length=True)
        ref = run_e.model.forward(cache_e, 0, tokens=prompt)
        torch.testing.assert_close(got, ref, atol=ATOL, rtol=0)
        for cache in (cache_c, cache_e):
            cache.advance(9)
        for t in sizes:
            toks = torch.randint(0, 48, (t,), generator=gen)
            a, ha = run_c.run(toks, cache_c.length, return_hidden=True)
            b, hb = run_e.run(toks, cache_e.length, return_hidden=True)
            torch.testing.assert_close(a, b, atol=ATOL, rtol=0)
            torch.testing.assert_close(ha, hb, atol=ATOL, rtol=0)
            drop = int(torch.randint(0, t + 1, (1,), generator=gen))  # a rejected tail
            for cache in (cache_c, cache_e):
                cache.advance(t)
                cache.rollback(drop)
            n = cache_c.length
            torch.testing.assert_close(cache_c.k[:, :, :n], cache_e.k[:, :, :n], atol=ATOL, rtol=0)
            torch.testing.assert_close(cache_c.v[:, :, :n], cache_e.v[:, :, :n], atol=ATOL, rtol=0)
    assert cache_c.k.data_ptr() == k_ptr  # written in place, never reallocated


def test_compiled_steps_trace_once_per_bucket() -> None:
    """Steps of 1-4 tokens at positions 9..~45 (three kv buckets of 16 rows) over 3
    layers: exactly two graphs (the two layer functions) per bucket used."""
    torch._dynamo.reset()
    counters.clear()
    pairs = _runners(_model(0), (1, 4), "aot_eager")
    sizes = [1, 3, 1, 4, 1, 2, 1, 1, 4, 1, 1, 3, 1, 1, 1, 4, 1, 1, 1]
    _steps(pairs, sizes, seed=0)
    run_c = pairs[0][0]
    assert sorted(run_c.stats.compiled_buckets) == [1, 4]
    # two static graphs per bucket + the two any-length prefill graphs; none per layer/position
    assert counters["stats"]["unique_graphs"] == 2 * 2 + 2
    assert run_c.stats.compile_ms > 0 and run_c.stats.eager_steps == len(sizes)


def test_any_length_prefill_compiles_once() -> None:
    """Prefills of five different lengths (from 0 and after cached positions) through the
    any-length compiled functions: two graphs in all, hidden states equal HF's."""
    torch._dynamo.reset()
    counters.clear()
    model = _model(4)
    fast = FastLlama(model.model, model.lm_head, fuse=True)
    fast.compile(backend="aot_eager")
    ids = torch.randint(0, 48, (60,), generator=torch.Generator().manual_seed(4))
    with torch.inference_mode():
        reference = model.model(input_ids=ids[None]).last_hidden_state[0]
        cache = fast.new_cache(96)
        outs = [fast.forward(cache, a, tokens=ids[a:b], compiled=True, any_length=True)
                for a, b in ((0, 9), (9, 22), (22, 40), (40, 47), (47, 60))]
    torch.testing.assert_close(torch.cat(outs), reference, atol=ATOL, rtol=0)
    assert counters["stats"]["unique_graphs"] == 2


def test_compiled_prefill_suffix_step() -> None:
    """The padded embeddings step (a question after a cached prefix) through the
    compiled functions equals an exact eager pass."""
    torch._dynamo.reset()
    model = _model(1)
    fast = FastLlama(model.model, model.lm_head, fuse=True)
    with torch.inference_mode():
        cache, ref_cache = fast.new_cache(96, slack=16), fast.new_cache(96, slack=16)
    runner = StepRunner(fast, cache, buckets=(1,), prefill_buckets=(8, 16), kv_granularity=16,
                        cuda_graphs=False, compile=True, compile_backend="aot_eager")
    ids = torch.randint(0, 48, (30,), generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        embeds = model.model.embed_tokens(ids)
        for c in (cache, ref_cache):
            fast.forward(c, 0, embeds=embeds[:20])
            c.advance(20)
        got = runner.run_embeds(embeds[20:], 20)  # 10 -> bucket 16
        ref = fast.forward(ref_cache, 20, embeds=embeds[20:])
    torch.testing.assert_close(got, ref, atol=ATOL, rtol=0)
    assert runner.stats.compiled_buckets == [16]


@pytest.mark.slow
def test_inductor_compiled_steps_match_eager() -> None:
    """Real code generation (C++ on the CPU): one step bucket, two layers (the
    any-length prefill functions are traced in the aot_eager tests; generating their
    code too would double this test's time)."""
    torch._dynamo.reset()
    pairs = _runners(_model(2, layers=2), (4,), "inductor", prefill=False)
    _steps(pairs, [1, 4, 2, 3, 4, 1], seed=2)
    assert pairs[0][0].stats.compiled_buckets == [4]


def test_compile_options_are_validated() -> None:
    with pytest.raises(ValueError, match="set fuse=True"):
        FastConfig(max_len=32, compile=True)
    with pytest.raises(ValueError, match="compile_backend"):
        FastConfig(max_len=32, compile=True, fuse=True, compile_backend="")
    assert FastConfig(max_len=32, compile=True, fuse=True).compile_backend == "inductor"
    model = _model(3)
    unfused = FastLlama(model.model, model.lm_head)
    with pytest.raises(ValueError, match="fuse=True"):
        unfused.compile()
    with torch.inference_mode():
        cache = unfused.new_cache(32, slack=4)
        with pytest.raises(RuntimeError, match="before FastLlama.compile"):
            unfused.forward(cache, 0, tokens=torch.tensor([1, 2]), compiled=True)
    with pytest.raises(ValueError, match="fuse=True"):
        StepRunner(unfused, cache, buckets=(1,), kv_granularity=4, cuda_graphs=False, compile=True)
