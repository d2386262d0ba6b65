"""Bucketed steps: the padded step (the function a CUDA graph captures) run eagerly on
the CPU equals the unpadded result; padding never disturbs valid positions; the GPU
capture/replay path (skipped on CPU) equals eager."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from evspec.models.fast.config import FastConfig
from evspec.models.fast.graphs import StepRunner, bucket_for, kv_rows_for
from evspec.models.fast.llama import FastLlama

torch.set_num_threads(1)
ATOL = 1e-5


def _model(seed: int = 0, device: str = "cpu", dtype: torch.dtype = torch.float32, *, hidden: int = 32,
           layers: int = 2) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=48, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
    )
    return LlamaForCausalLM(cfg).eval().to(device, dtype)


def _pair(model: LlamaForCausalLM, buckets: tuple[int, ...], granularity: int, *, graphs: bool = False,
          fuse: bool = False, prefill_buckets: tuple[int, ...] = (), **kinds: str):
    fast = FastLlama(model.model, model.lm_head, fuse=fuse, **kinds)
    with torch.inference_mode():
        cache = fast.new_cache(64, slack=max((buckets[-1], *prefill_buckets)))
    runner = StepRunner(fast, cache, buckets=buckets, kv_granularity=granularity, cuda_graphs=graphs,
                        prefill_buckets=prefill_buckets)
    return fast, cache, runner


def test_bucket_and_kv_rows_helpers() -> None:
    assert [bucket_for(n, (1, 2, 4, 8)) for n in (1, 2, 3, 5, 8)] == [1, 2, 4, 8, 8]
    with pytest.raises(ValueError, match="max_score_tokens"):
        bucket_for(9, (1, 2, 4, 8))
    assert kv_rows_for(1, 16, 100) == 16 and kv_rows_for(16, 16, 100) == 16
    assert kv_rows_for(17, 16, 100) == 32 and kv_rows_for(99, 16, 100) == 100


@pytest.mark.parametrize(("seed", "fuse"), [(0, False), (1, True)])
def test_padded_bucket_step_equals_unpadded(seed: int, fuse: bool) -> None:
    """Sparse buckets force padding (3 -> 4, 5 -> 8); kv rows are rounded to 16.  Logits
    of the real positions equal an exact-shape pass, and the valid cache rows equal the
    exact pass's rows (padding only wrote beyond the length)."""
    model = _model(seed)
    gen = torch.Generator().manual_seed(seed)
    _, cache_p, padded = _pair(model, (1, 2, 4, 8), 16, fuse=fuse)
    fast, cache_e, _ = _pair(model, (1, 2, 4, 8), 16)
    prompt = torch.randint(0, 48, (11,), generator=gen)
    with torch.inference_mode():
        for c in (cache_p, cache_e):
            fast.forward(c, 0, tokens=prompt)
            c.advance(11)
        for t in (3, 5, 1, 7, 2, 8):
            toks = torch.randint(0, 48, (t,), generator=gen)
            start = cache_e.length
            assert padded.plan(t, start)[0] >= t
            got, hid = padded.run(toks, start, return_hidden=True)
            cache_p.advance(t)
            ref_h = fast.forward(cache_e, start, tokens=toks)
            cache_e.advance(t)
            ref = fast.logits(ref_h)
            assert got.shape == (t, 48) and hid.shape == (t, 32)
            torch.testing.assert_close(got, ref, atol=ATOL, rtol=0)
            torch.testing.assert_close(hid, ref_h, atol=ATOL, rtol=0)
            n = cache_e.length
            torch.testing.assert_close(cache_p.k[:, :, :n], cache_e.k[:, :, :n], atol=ATOL, rtol=0)
            cache_p.rollback(1)  # a rejected draft: the next step overwrites its row
            cache_e.rollback(1)
    assert padded.stats.eager_steps == 6 and padded.stats.graphs == 0


@pytest.mark.parametrize("fuse", [False, True])
def test_padded_prefill_suffix_equals_exact_pass(fuse: bool) -> None:
    """A question after a cached prefix as a padded embeddings step (5 -> 8, 11 -> 16,
    kv rows rounded to 16): hidden states and cache rows equal an exact-shape pass, and
    padding never touched the valid rows of a later suffix."""
    model = _model(6)
    _, cache_p, runner = _pair(model, (1,), 16, fuse=fuse, prefill_buckets=(8, 16))
    fast, cache_e, _ = _pair(model, (1,), 16)
    gen = torch.Generator().manual_seed(6)
    prefix = torch.randint(0, 48, (13,), generator=gen)
    with torch.inference_mode():
        for c in (cache_p, cache_e):
            fast.forward(c, 0, tokens=prefix)
            c.advance(13)
        for t in (5, 11, 8):
            embeds = model.model.embed_tokens(torch.randint(0, 48, (t,), generator=gen))
            start = cache_e.length
            assert runner.plan(t, start, "embeds")[0] in (8, 16)
            got = runner.run_embeds(embeds, start)
            ref = fast.forward(cache_e, start, embeds=embeds)
            assert got.shape == (t, 32)
            torch.testing.assert_close(got, ref, atol=ATOL, rtol=0)
            for c in (cache_p, cache_e):
                c.advance(t)
            n = cache_e.length
            torch.testing.assert_close(cache_p.v[:, :, :n], cache_e.v[:, :, :n], atol=ATOL, rtol=0)
            cache_p.rollback(t)  # the next question replaces this one
            cache_e.rollback(t)
    assert runner.stats.eager_steps == 3
    with pytest.raises(ValueError, match="largest bucket 16"):
        runner.run_embeds(torch.zeros(17, 32), cache_p.length)


def test_padding_at_the_end_of_the_context_stays_in_the_buffer() -> None:
    """A 5-token step padded to 8 at the last positions writes into the slack only."""
    model = _model(3)
    _, cache, runner = _pair(model, (1, 8), 1)
    with torch.inference_mode():
        cache.advance(cache.max_len - 5)  # garbage rows are fine for this check
        logits, _ = runner.run(torch.arange(5), cache.length)
    assert logits.shape == (5, 48) and torch.isfinite(logits).all()
    with pytest.raises(ValueError, match="max_len"):
        runner.run(torch.arange(6), cache.length)


def test_runner_validates_its_setup() -> None:
    model = _model(4)
    fast = FastLlama(model.model, model.lm_head)
    with torch.inference_mode():
        cache = fast.new_cache(32, slack=2)
    with pytest.raises(ValueError, match="slack"):
        StepRunner(fast, cache, buckets=(1, 4), kv_granularity=8, cuda_graphs=False)
    with pytest.raises(ValueError, match="ascending"):
        StepRunner(fast, cache, buckets=(2, 1), kv_granularity=8, cuda_graphs=False)
    with pytest.raises(ValueError, match="CUDA"):
        StepRunner(fast, cache, buckets=(1, 2), kv_granularity=8, cuda_graphs=True)
    with pytest.raises(ValueError, match="end at max_score_tokens"):
        FastConfig(max_len=32, max_score_tokens=8, buckets=(1, 4))
    with pytest.raises(ValueError, match="compile=True"):
        FastConfig(max_len=32, compile_mode="max-autotune-no-cudagraphs")
    assert FastConfig(max_len=32, max_score_tokens=3).step_buckets == (1, 2, 3)
    with pytest.raises(ValueError, match="prefill_buckets must be distinct"):
        FastConfig(max_len=32, prefill_buckets=(32, 16))
    assert FastConfig(max_len=32, max_score_tokens=4, prefill_buckets=(16, 40)).slack == 48
    assert FastConfig(max_len=32, max_score_tokens=4).slack == 16
    with pytest.raises(ValueError, match="slack"):
        StepRunner(fast, cache, buckets=(1, 2), prefill_buckets=(4,), kv_granularity=8, cuda_graphs=False)
    runner = StepRunner(fast, cache, buckets=(1, 2), kv_granularity=8, cuda_graphs=False)
    with pytest.raises(ValueError, match="needs prefill_buckets"):
        runner.run_embeds(torch.zeros(1, 32), 0)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
def test_cuda_graph_replay_equals_eager() -> None:
    model = _model(5, device="cuda")
    _, cache_g, graphed = _pair(model, (1, 2, 4, 8), 16, graphs=True)
    fast, cache_e, eager = _pair(model, (1, 2, 4, 8), 16)
    prompt = torch.arange(3, 14, device="cuda")
    with torch.inference_mode():
        for c in (cache_g, cache_e):
            fast.forward(c, 0, tokens=prompt)
            c.advance(11)
        for t in (1, 3, 1, 5, 8, 1, 2):
            toks = torch.randint(0, 48, (t,))
            a, _ = graphed.run(toks, cache_g.length)
            b, _ = eager.run(toks, cache_e.length)
            cache_g.advance(t)
            cache_e.advance(t)
            torch.testing.assert_close(a, b, atol=ATOL, rtol=0)
    assert graphed.stats.graphs >= 3 and graphed.stats.replays == 7


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
def test_graphed_triton_kernels_equal_eager_torch_layers() -> None:
    """The Triton layer kernels and split-KV attention captured in CUDA graphs (chained with
    programmatic dependent launch on Hopper: a kernel that read its input before the previous
    one finished would show here) equal the eager torch layers, in float32, over many steps."""
    model = _model(7, device="cuda", hidden=128, layers=4)  # head_dim 32: the kernels take it
    fast_g, cache_g, graphed = _pair(model, (1, 2, 4, 8), 16, graphs=True, fuse=True, kernels="triton",
                                     attention="splitkv")
    fast, cache_e, eager = _pair(model, (1, 2, 4, 8), 16)
    prompt = torch.arange(3, 14, device="cuda")
    gen = torch.Generator().manual_seed(7)
    with torch.inference_mode():
        for f, c in ((fast_g, cache_g), (fast, cache_e)):
            f.forward(c, 0, tokens=prompt)
            c.advance(11)
        for t in (1, 1, 3, 1, 5, 8, 1, 1, 2, 1) * 2:
            toks = torch.randint(0, 48, (t,), generator=gen)
            a, _ = graphed.run(toks, cache_g.length)
            b, _ = eager.run(toks, cache_e.length)
            cache_g.advance(t)
            cache_e.advance(t)
            torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    assert graphed.stats.replays == 20


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
@pytest.mark.parametrize(("fuse", "compile"), [(False, False), (True, False), (True, True)])
def test_wrapper_with_graphs_matches_dynamic_on_cuda(fuse: bool, compile: bool) -> None:
    """Tiny Video-LLaVA on CUDA in float32: engine tokens with graphs (target-only,
    drafting for itself, and a prefix-cache hit whose question replays an embeddings
    graph) equal the dynamic path's; unfused, fused, fused + compiled (inductor)."""
    import numpy as np

    from evspec.decoding.drafters import ModelDrafter
    from evspec.decoding.engine import generate
    from evspec.models.request import Request
    from evspec.models.target import VideoLlavaTarget

    target = VideoLlavaTarget.from_preset("tiny-random", seed=0, device="cuda")
    video = np.random.default_rng(0).integers(0, 256, (target.num_frames, 40, 48, 3), dtype=np.uint8)
    req = Request("What is moving?", video=video)
    expected = generate(target, req, None, max_new_tokens=24).tokens
    runtime = target.enable_fast(max_score_tokens=5, fuse=fuse, compile=compile,
                                 compile_mode="default" if compile else None)
    assert runtime.config.cuda_graphs and runtime.config.prefill_buckets == (16, 32, 64)
    assert generate(target, req, None, max_new_tokens=24).tokens == expected
    drafter = ModelDrafter(target, name="self")
    assert generate(target, req, drafter, gamma=4, max_new_tokens=24).tokens == expected
    target.enable_prefix_cache()
    clip = Request("What is moving?", video=video, clip_id="c")
    generate(target, Request("How many?", video=video, clip_id="c"), None, max_new_tokens=2)
    hit = generate(target, clip, None, max_new_tokens=24)
    assert hit.tokens == expected
    assert runtime.stats["graphs"] >= 3 and runtime.stats["replays"] > 0
    assert any(kind == "embeds" for slot in runtime._slots for kind, _, _ in slot.runner.stats.shapes)
    target.disable_prefix_cache()
