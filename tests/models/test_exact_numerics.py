"""The fast engine's numerics contract on the CPU (one row bucket): a position's logits are
bitwise the same whether a one-token step, a score of k tokens (every k <= 16, random
positions), the greedy chain, a step after a rollback or a prefix hit computed them, in bf16,
fp16 and fp32, for tiny and 7B-like (narrow, same structure) random models, where near-ties
are frequent; hence greedy speculative output is token-identical to target-only output for
every drafter kind (over 200 randomized cases per drafter), and ``exact=False`` (per-size
steps) is shown to break it.  The Triton path's twin is test_row_invariance.py."""

from __future__ import annotations

import random

import pytest
import torch
from llama_doubles import CharLM

from evspec.decoding.drafters import make_drafter
from evspec.decoding.engine import generate
from evspec.models.request import Request

torch.set_num_threads(1)
DTYPES = (torch.bfloat16, torch.float16, torch.float32)
#: (hidden, intermediate, layers, heads, kv heads): tiny, and LLaMA-7B's structure made narrow
#: (MHA, head_dim 128, intermediate ≈ 2.7 × hidden)
SHAPES = {"tiny": (32, 64, 2, 4, 2), "7b-like": (256, 688, 2, 2, 2)}


class RandomLM(CharLM):
    """A random LLaMA of shape ``shape`` in ``dtype`` reading the question one id per
    character."""

    def __init__(
        self,
        seed: int,
        dtype: torch.dtype,
        shape: str = "tiny",
        *,
        vocab: int = 48,
        context: int = 200,
    ):
        hidden, inter, layers, heads, kv = SHAPES[shape]
        super().__init__(
            seed,
            dtype,
            vocab=vocab,
            hidden=hidden,
            intermediate=inter,
            layers=layers,
            heads=heads,
            kv_heads=kv,
            context=context,
            chars=40,
        )


def _steps(model: RandomLM, prompt: str, tokens: list[int]) -> torch.Tensor:
    """Logits ``[len(tokens), V]`` of ``tokens`` fed one per step after ``prompt``."""
    state = model.prefill(Request(prompt))
    return torch.cat([model.score(state, torch.tensor([t])).logits for t in tokens])


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_a_score_of_k_tokens_is_k_decode_steps_bit_for_bit(dtype: torch.dtype, shape: str) -> None:
    """Every k in 1..16, at random positions (prompt lengths), after random earlier scores
    that were rolled back; the greedy chain's ids are the steps' argmaxes."""
    model = RandomLM(11, dtype, shape)
    runtime = model.enable_fast()
    assert runtime.exact and runtime.config.step_buckets == (16,)
    rng = random.Random(3)
    tokens = [rng.randrange(3, 48) for _ in range(16)]
    for k in range(1, 17):
        prompt = "".join(rng.choice("abcdefgh") for _ in range(rng.randint(1, 60)))
        want = _steps(model, prompt, tokens[:k])  # [k, V]
        state = model.prefill(Request(prompt))
        junk = rng.randint(1, 16)  # a rejected score first: its rows stay in the cache, hidden
        model.score(state, torch.tensor([rng.randrange(3, 48) for _ in range(junk)]))
        model.rollback(state, junk)
        got = model.score(state, torch.tensor(tokens[:k])).logits
        assert torch.equal(got, want), f"k={k} prompt of {len(prompt)}"
    state = model.prefill(Request("abcabc"))
    first = int(state.last_logits.argmax())
    chained = model.greedy_chain(state, 12, first).tolist()
    fed, ids = first, []
    state = model.prefill(Request("abcabc"))
    for _ in range(12):
        fed = int(model.score(state, torch.tensor([fed])).logits[0].argmax())
        ids.append(fed)
    assert chained == ids


def test_exact_false_steps_differ_so_the_test_can_fail() -> None:
    """Per-size steps (``exact=False``): some score of bf16 logits differs from its decode
    steps — what the row bucket is for."""
    model = RandomLM(11, torch.bfloat16, "7b-like")
    model.enable_fast(exact=False)
    assert not model.fast.exact
    rng = random.Random(3)
    tokens = [rng.randrange(3, 48) for _ in range(16)]
    differ = 0
    for k in (4, 9, 16):
        want = _steps(model, "abcdefg", tokens[:k])
        state = model.prefill(Request("abcdefg"))
        differ += not torch.equal(model.score(state, torch.tensor(tokens[:k])).logits, want)
    assert differ


def test_exact_is_refused_where_the_options_cannot_keep_it() -> None:
    model = RandomLM(1, torch.bfloat16)
    with pytest.raises(ValueError, match="several sizes"):
        model.enable_fast(exact=True, buckets=(1, 4, 16))
    with pytest.raises(ValueError, match="max_score_tokens"):
        model.enable_fast(exact=True, max_score_tokens=24)
    assert not model.enable_fast(buckets=(1, 4, 16)).exact  # the default: exact where possible
    assert model.enable_fast(max_score_tokens=9).config.step_buckets == (9,)


def _drafter(kind: str, target: RandomLM, other: RandomLM):
    if kind == "eventgpt":  # a second model drafting (what the eventgpt drafter is to the engine)
        return make_drafter("eventgpt", target=target, draft_model=other)
    if kind == "heads":  # an untrained draft head on the target's hidden states
        return make_drafter("target-head", target=target, head_path="untrained")
    return make_drafter(kind, target=target)


@pytest.mark.parametrize("dtype", (torch.bfloat16, torch.float16), ids=str)
@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_greedy_speculative_output_is_target_only_output(dtype: torch.dtype, shape: str) -> None:
    """Randomized cases (random models, prompts, γ 1-15, answer lengths, early EOS or none):
    every drafter's answer equals the target-only answer; with the other three parametrised
    runs, over 200 cases per drafter."""
    rng = random.Random(hash((str(dtype), shape)) % 1000)
    cases = 88 if shape == "tiny" else 12  # 2 × (88 + 12) = 200 cases per drafter
    kinds = ("eventgpt", "prompt-lookup", "self", "heads")
    for model_seed in range(cases // 13 + 1):
        target = RandomLM(100 + model_seed, dtype, shape)
        other = RandomLM(200 + model_seed, dtype, shape)
        target.enable_fast()
        other.enable_fast()
        for case in range(min(13, cases - 13 * model_seed)):
            q = "".join(rng.choice("abcdefgh") for _ in range(rng.randint(1, 40)))
            max_new = rng.randint(1, 28)
            stop = rng.random() < 0.5
            ref = generate(target, Request(q), None, max_new_tokens=max_new, stop_at_eos=stop)
            for kind in kinds:
                gamma = rng.randint(1, 15)
                res = generate(
                    target,
                    Request(q),
                    _drafter(kind, target, other),
                    gamma=gamma,
                    max_new_tokens=max_new,
                    stop_at_eos=stop,
                )
                assert (
                    res.tokens == ref.tokens
                ), f"{kind} γ={gamma} seed={model_seed} case={case} q={q!r}"


def test_bf16_answers_after_a_prefix_hit_equal_target_only_answers() -> None:
    """Video-LLaVA (tiny preset) in bf16 with the prefix cache: questions on one clip (the
    first a miss, the rest hits) answered target-only, self-drafting and by prompt lookup give
    the same tokens as target-only without the cache."""
    import numpy as np

    from evspec.models.target import VideoLlavaTarget

    target = VideoLlavaTarget.from_preset("tiny-random", seed=4, dtype=torch.bfloat16)
    video = np.random.default_rng(5).integers(
        0, 256, (target.num_frames, 40, 48, 3), dtype=np.uint8
    )
    questions = ("What is moving?", "Which way does it go?", "What colour is it?")
    target.enable_fast()
    plain = [
        generate(target, Request(q, video=video), None, max_new_tokens=20, stop_at_eos=False).tokens
        for q in questions
    ]
    target.enable_prefix_cache()
    for kind in ("none", "self", "prompt-lookup"):
        for q, want in zip(questions, plain):
            drafter = None if kind == "none" else make_drafter(kind, target=target)
            res = generate(
                target,
                Request(q, video=video, clip_id="clip"),
                drafter,
                gamma=5,
                max_new_tokens=20,
                stop_at_eos=False,
            )
            assert res.tokens == want, (kind, q)
    assert target.prefill(Request(questions[0], video=video, clip_id="clip")).timings["prefix_hit"]
