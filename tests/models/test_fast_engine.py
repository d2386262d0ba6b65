"""``enable_fast`` through the engine: greedy output is token-identical to the default
dynamic-cache path (float32, CPU) over randomized cases, for target-only decoding, a
model drafter, the target drafting for itself and prompt lookup; plus slot handling."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from evspec.decoding.drafters import ModelDrafter, PromptLookupDrafter
from evspec.decoding.engine import generate
from evspec.models.causal_lm import CausalLMWrapper
from evspec.models.fast.config import compile_buckets
from evspec.models.fast.static_cache import StaticKVCache
from evspec.models.request import Request
from evspec.models.state import TargetState
from evspec.models.target import VideoLlavaTarget

torch.set_num_threads(1)
EOS = 2


class TinyLM(CausalLMWrapper):
    """A random tiny LLaMA reading the question one id per character."""

    def __init__(self, seed: int, *, kv_heads: int = 2, eos_bias: float = 0.0, context: int = 160):
        torch.manual_seed(seed)
        cfg = LlamaConfig(
            vocab_size=24, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=kv_heads, max_position_embeddings=context,
            bos_token_id=1, eos_token_id=EOS,
        )
        self.model = LlamaForCausalLM(cfg).eval()
        with torch.no_grad():
            self.model.lm_head.weight.mul_(8.0)  # sharpen: no near-ties in greedy choices
            if eos_bias:  # a biased head: EOS likelier (> 0) or never (< 0)
                head = torch.nn.Linear(32, 24, bias=True)
                head.weight.copy_(self.model.lm_head.weight)
                head.bias.zero_()
                head.bias[EOS] = eos_bias
                self.model.lm_head = head
        self.decoder, self.lm_head = self.model.model, self.model.lm_head
        self.tokenizer = None
        self.eos_token_id, self.max_context, self.vocab_size = EOS, context, 24

    def prefill(self, request: Request, *, return_hidden: bool = False) -> TargetState:
        ids = torch.tensor([1] + [3 + ord(c) % 21 for c in request.question])
        with torch.inference_mode():
            emb = self.decoder.embed_tokens(ids)
        return self._prefill_embeds(emb, ids, return_hidden=return_hidden, timings={})

    def decode_text(self, ids: list[int]) -> str:
        return " ".join(map(str, ids))


def _run(target, question, drafter_kind, draft_model, gamma, max_new):
    drafter = {
        "none": lambda: None,
        "model": lambda: ModelDrafter(draft_model, name="model"),
        "self": lambda: ModelDrafter(target, name="self"),
        "prompt-lookup": lambda: PromptLookupDrafter(),
    }[drafter_kind]()
    res = generate(target, Request(question), drafter, gamma=gamma, max_new_tokens=max_new)
    return res.tokens, res.stats.stop_reason


@pytest.mark.parametrize("block", range(2))
def test_fast_greedy_identical_randomized(block: int) -> None:
    """24 randomized cases per block: GQA/MHA targets, early EOS, γ 1-8, sparse buckets
    (padded steps) or exact ones, small kv granularity, fused or module layers; every
    drafter kind."""
    rng = random.Random(500 + block)
    kinds = ("none", "model", "self", "prompt-lookup")
    for case in range(24):
        seed = rng.randrange(10_000)
        target = TinyLM(seed, kv_heads=rng.choice((1, 2, 4)), eos_bias=rng.choice((0.0, 0.0, 3.0)))
        drafter_model = TinyLM(seed + 1)
        question = "".join(rng.choice("abcab xyz") for _ in range(rng.randrange(2, 30)))
        kind, gamma, max_new = kinds[case % 4], rng.randrange(1, 9), rng.randrange(4, 40)
        expected = _run(target, question, kind, drafter_model, gamma, max_new)
        buckets = rng.choice((None, (1, 2, 4, 9), (1, 3, 9)))
        fuse = rng.choice((False, True))
        target.enable_fast(max_score_tokens=9, buckets=buckets, kv_granularity=rng.choice((8, 32, 256)),
                           attention=rng.choice(("sdpa", "matmul", "auto")), fuse=fuse)
        drafter_model.enable_fast(max_score_tokens=9, fuse=rng.choice((False, True)))
        got = _run(target, question, kind, drafter_model, gamma, max_new)
        assert got == expected, f"case {case}: {kind} gamma={gamma} buckets={buckets} fuse={fuse}"
        assert target.fast.stats["eager_steps"] > 0 or len(got[0]) == 1  # EOS first


def test_fast_context_limit_matches_dynamic() -> None:
    """``max_len`` below the model context becomes the context: both paths stop at it."""
    target = TinyLM(7, context=160, eos_bias=-100.0)
    short = TinyLM(7, context=40, eos_bias=-100.0)
    q = "abcabcabcab"
    expected = _run(short, q, "self", None, 3, 100)
    assert expected[1] == "context"
    target.enable_fast(max_len=40)
    assert target.max_context == 40
    assert _run(target, q, "self", None, 3, 100) == expected
    target.disable_fast()
    assert target.max_context == 160


def test_state_holds_the_static_cache_in_sync() -> None:
    target = TinyLM(8)
    target.enable_fast(max_len=64)
    state = target.prefill(Request("abc"))
    assert isinstance(state.cache, StaticKVCache) and state.cache.length == state.length == 4
    target.score(state, torch.tensor([5, 6, 7]))
    target.rollback(state, 2)
    assert state.cache.length == state.length == 5


@pytest.mark.parametrize(("fuse", "prefill_buckets"), [(False, ()), (True, ()), (True, (8, 16))])
def test_steps_longer_than_the_largest_bucket_run_eagerly(fuse: bool, prefill_buckets: tuple[int, ...]) -> None:
    """γ + 1 above max_score_tokens still works, same tokens: an exact-shape eager pass
    (lower-right causal), or with prefill buckets a padded embeddings step."""
    target = TinyLM(11)
    expected = _run(target, "abcabc", "self", None, 8, 30)
    runtime = target.enable_fast(max_score_tokens=4, fuse=fuse, prefill_buckets=prefill_buckets)
    assert _run(target, "abcabc", "self", None, 8, 30) == expected
    steps = runtime.stats["eager_steps"]
    state = target.prefill(Request("abcabc"))
    target.score(state, torch.arange(3, 12))  # 9 tokens > 4
    assert runtime.stats["eager_steps"] == steps + (1 if prefill_buckets else 0)


def test_compiled_engine_is_greedy_identical() -> None:
    """compile=True (the aot_eager backend: dynamo tracing without code generation, fast
    on a CPU) through the engine: target-only and self-drafting tokens unchanged."""
    for seed in (21, 22):
        target = TinyLM(seed, kv_heads=2)
        expected = [_run(target, "abcab xy", kind, None, 3, 20) for kind in ("none", "self")]
        runtime = target.enable_fast(max_score_tokens=4, buckets=(1, 2, 4), compile=True,
                                     compile_backend="aot_eager")
        assert runtime.config.fuse and runtime.model.compiled
        assert [_run(target, "abcab xy", kind, None, 3, 20) for kind in ("none", "self")] == expected
        assert runtime.stats["compiled_buckets"]


def test_compiled_engine_defaults_to_power_of_two_buckets() -> None:
    """With compile, no buckets and ``exact=False``, every step size pads to a power of two
    (one compile each), the mode is torch.compile's default, and dynamo may keep them all;
    exact (the default off the Triton kernels), every step pads to one bucket."""
    assert compile_buckets(16) == (1, 2, 4, 8, 16)
    assert compile_buckets(9) == (1, 2, 4, 8, 9) and compile_buckets(1) == (1,)
    assert compile_buckets(16, (9, 5, 4, 40, 0)) == (1, 2, 4, 5, 8, 9, 16)  # the run's scores, in range
    with pytest.raises(ValueError, match=">= 1"):
        compile_buckets(0)
    target = TinyLM(23, kv_heads=2)
    expected = _run(target, "abcab xy", "self", None, 4, 12)
    runtime = target.enable_fast(max_score_tokens=5, compile=True, compile_backend="aot_eager")
    assert runtime.config.step_buckets == (5,) and runtime.exact
    assert _run(target, "abcab xy", "self", None, 4, 12) == expected
    runtime = target.enable_fast(max_score_tokens=5, compile=True, compile_backend="aot_eager",
                                 exact=False)
    assert runtime.config.step_buckets == (1, 2, 4, 5) and runtime.config.compile_mode is None
    assert torch._dynamo.config.recompile_limit >= 64
    assert _run(target, "abcab xy", "self", None, 4, 12) == expected
    assert set(runtime.stats["compiled_buckets"]) <= {1, 2, 4, 5}
    runtime = target.enable_fast(compile=True, compile_backend="aot_eager", score_sizes=(5,),
                                 exact=False)
    assert runtime.config.step_buckets == (1, 2, 4, 5, 8, 16)  # γ = 4 scores 5 tokens unpadded
    assert _run(target, "abcab xy", "self", None, 4, 12) == expected
    assert 5 in runtime.stats["compiled_buckets"]


def test_slots_are_reused_and_exhaustion_is_explained() -> None:
    target = TinyLM(9)
    runtime = target.enable_fast(max_len=64, max_slots=1)
    for _ in range(3):  # each finished request frees its slot (weak reference)
        _run(target, "abab", "none", None, 1, 5)
    assert runtime.stats["slots"] == 1
    held = target.prefill(Request("abc"))
    with pytest.raises(RuntimeError, match="max_slots"):
        target.prefill(Request("abd"))
    target.release(held)
    other = target.prefill(Request("abd"))
    with pytest.raises(RuntimeError, match="newer request"):
        target.score(held, torch.tensor([3]))
    assert other.cache is held.cache


def test_defaults_follow_the_device() -> None:
    """On a CPU: no graphs, no fusion, no padded prefill unless asked for; compile
    implies fusion."""
    target = TinyLM(12)
    cfg = target.enable_fast().config
    assert (cfg.cuda_graphs, cfg.fuse, cfg.prefill_buckets, cfg.compile_mode) == (False, False, (), None)
    cfg = target.enable_fast(compile=True, compile_backend="aot_eager").config
    assert cfg.fuse and cfg.compile
    with pytest.raises(ValueError, match="set fuse=True"):
        target.enable_fast(compile=True, fuse=False)


@pytest.mark.parametrize("fuse", [False, True])
def test_video_llava_fast_matches_dynamic(fuse: bool) -> None:
    """The real wrapper (tiny-random Video-LLaVA): identical greedy tokens and close
    logits with and without the fast path (module or fused layers)."""
    target = VideoLlavaTarget.from_preset("tiny-random", seed=0)
    video = np.random.default_rng(1).integers(0, 256, (target.num_frames, 40, 48, 3), dtype=np.uint8)
    req = Request("What is moving?", video=video)
    ref_state = target.prefill(req)
    expected = generate(target, req, ModelDrafter(target, name="self"), gamma=3, max_new_tokens=24).tokens
    target.enable_fast(fuse=fuse)
    state = target.prefill(req)
    torch.testing.assert_close(state.last_logits, ref_state.last_logits, atol=1e-4, rtol=0)
    del state
    assert generate(target, req, ModelDrafter(target, name="self"), gamma=3, max_new_tokens=24).tokens == expected
    assert generate(target, req, None, max_new_tokens=24).tokens == expected


def test_prefix_hit_with_padded_question_step_matches_uncached() -> None:
    """Fused layers + prefix cache + prefill buckets (the question after the cached
    video replays a padded embeddings step): answers equal the uncached dynamic path,
    and the hit's question ran as one padded step."""
    target = VideoLlavaTarget.from_preset("tiny-random", seed=1)
    video = np.random.default_rng(2).integers(0, 256, (target.num_frames, 40, 48, 3), dtype=np.uint8)
    questions = ("What is moving?", "What colour is the square?", "How many objects are there?")
    expected = [generate(target, Request(q, video=video), ModelDrafter(target, name="self"), gamma=3,
                         max_new_tokens=16).tokens for q in questions]
    runtime = target.enable_fast(fuse=True, prefill_buckets=(8, 32, 64))
    target.enable_prefix_cache()
    got = [generate(target, Request(q, video=video, clip_id="clip"), ModelDrafter(target, name="self"),
                    gamma=3, max_new_tokens=16).tokens for q in questions]
    assert got == expected
    steps = runtime.stats["eager_steps"]
    state = target.prefill(Request(questions[1], video=video, clip_id="clip"))
    assert state.timings["prefix_hit"] and runtime.stats["eager_steps"] == steps + 1
    target.disable_prefix_cache()
