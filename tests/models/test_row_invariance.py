"""The Triton kernels are row-invariant, bit for bit (on a GPU, or on the CPU under
``TRITON_INTERPRET=1``, which tests/conftest.py sets): a row's output of the fused GEMV, of
the q/k/v + RoPE + cache-write kernel, of exact split-KV attention and of a whole Triton
engine step is the same whether the step has 1 or k rows, for every k <= 16, at random
positions, in bf16 and fp16 — so a score of k tokens gives the logits of k decode steps.
(The CPU engine's bucket path: test_exact_numerics.py.)"""

from __future__ import annotations

import random

import pytest
import torch
from llama_doubles import CharLM

from evspec.models.fast.decode_attention import EXACT_CHUNK, split_kv_attention
from evspec.models.fast.gemv import fused_linear
from evspec.models.fast.ops import rope_tables, rotation_sin
from evspec.models.fast.triton_layer import triton_attention_inputs
from evspec.models.fast.triton_support import available
from evspec.models.request import Request

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
pytestmark = [
    pytest.mark.triton_kernels,
    pytest.mark.skipif(
        not available(DEVICE), reason="needs Triton on a GPU, or TRITON_INTERPRET=1"
    ),
]
DTYPES = (torch.bfloat16, torch.float16)


def _randn(
    gen: torch.Generator, *shape: int, scale: float = 1.0, dtype=torch.float32
) -> torch.Tensor:
    return (torch.randn(*shape, generator=gen, device=DEVICE) * scale).to(dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("kind", ["norm", "gated_silu", "residual"])
def test_fused_linear_rows_do_not_depend_on_the_row_count(dtype: torch.dtype, kind: str) -> None:
    gen = torch.Generator(device=DEVICE).manual_seed(7)
    n, k = 24, 80  # ragged against the blocks: masked tails too
    x = _randn(gen, 16, 2 * k if kind == "gated_silu" else k, dtype=dtype)
    w = _randn(gen, n, k, scale=k**-0.5, dtype=dtype)
    opts = dict(block_k=32, block_n=8)
    if kind == "norm":
        opts.update(norm_weight=_randn(gen, k, scale=0.1, dtype=dtype) + 1)
    elif kind == "gated_silu":
        opts.update(gated_silu=True)
    res = _randn(gen, 16, n, dtype=dtype) if kind == "residual" else None
    one = [
        fused_linear(
            x[i : i + 1],
            w,
            residual=None if res is None else res[i : i + 1],
            backend="triton",
            **opts,
        )
        for i in range(16)
    ]
    for m in range(2, 17):
        rows = fused_linear(
            x[:m], w, residual=None if res is None else res[:m], backend="triton", **opts
        )
        assert torch.equal(rows, torch.cat(one[:m])), f"{m} rows"
    # other output blocks and warps: a row's arithmetic does not depend on them either
    wide = fused_linear(
        x[:5],
        w,
        residual=None if res is None else res[:5],
        backend="triton",
        **{**opts, "block_n": 4},
        num_warps=2,
    )
    assert torch.equal(wide, torch.cat(one[:5]))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_qkv_kernel_rows_do_not_depend_on_the_row_count(dtype: torch.dtype) -> None:
    """q and the written cache rows of a T-token step equal T one-token steps (GQA, T 1-16)."""
    gen = torch.Generator(device=DEVICE).manual_seed(3)
    hidden, heads, kv_heads, d, cap = 64, 2, 1, 32, 64
    x = _randn(gen, 16, hidden, dtype=dtype)
    ln = _randn(gen, hidden, scale=0.1, dtype=dtype) + 1
    w = _randn(gen, (heads + 2 * kv_heads) * d, hidden, scale=hidden**-0.5, dtype=dtype)
    inv = 1.0 / 10000 ** (torch.arange(0, d, 2, device=DEVICE).float() / d)
    cos, sin = rope_tables(torch.arange(cap, device=DEVICE), inv, 1.0, dtype)
    sin = rotation_sin(sin)
    rng = random.Random(1)

    def step(rows: torch.Tensor, start: int, kc: torch.Tensor, vc: torch.Tensor) -> torch.Tensor:
        pos = torch.arange(start, start + rows.shape[0], device=DEVICE)
        return triton_attention_inputs(
            rows, ln, w, None, cos[pos], sin[pos], kc, vc, pos, 1e-5, heads, kv_heads
        )

    for t in (1, 2, 3, 5, 8, 9, 13, 16):
        start = rng.randrange(0, cap - 16)
        kc, vc = torch.zeros(2, kv_heads, cap, d, dtype=dtype, device=DEVICE)
        q = step(x[:t], start, kc, vc)
        k1, v1 = torch.zeros(2, kv_heads, cap, d, dtype=dtype, device=DEVICE)
        q1 = torch.cat([step(x[i : i + 1], start + i, k1, v1) for i in range(t)], dim=1)
        assert torch.equal(q, q1) and torch.equal(kc, k1) and torch.equal(vc, v1), f"T={t}"


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_exact_split_kv_rows_do_not_depend_on_the_step(dtype: torch.dtype) -> None:
    """A query's output is the same in a step of T queries over any kv bucket as alone over
    exactly its visible rows (positions on both sides of a chunk boundary)."""
    gen = torch.Generator(device=DEVICE).manual_seed(5)
    heads, kv_heads, d, cap = 2, 1, 16, 3 * EXACT_CHUNK
    keys = _randn(gen, kv_heads, cap, d, dtype=dtype)
    vals = _randn(gen, kv_heads, cap, d, dtype=dtype)
    q = _randn(gen, heads, 16, d, dtype=dtype)
    rng = random.Random(2)
    for t in (1, 4, 9, 16):
        start = rng.choice((EXACT_CHUNK - t // 2, rng.randrange(0, 2 * EXACT_CHUNK)))
        kv_rows = min(cap, start + t + rng.randrange(0, EXACT_CHUNK))
        out = split_kv_attention(
            q[:, :t],
            keys,
            vals,
            torch.tensor(start, device=DEVICE),
            kv_rows,
            0.25,
            backend="triton",
            exact=True,
        )
        for i in range(t):
            alone = split_kv_attention(
                q[:, i : i + 1].contiguous(),
                keys,
                vals,
                torch.tensor(start + i, device=DEVICE),
                start + i + 1,
                0.25,
                backend="triton",
                exact=True,
            )
            assert torch.equal(out[:, i], alone[:, 0]), f"T={t} query {i} at {start + i}"


def _triton_lm(dtype: torch.dtype) -> CharLM:
    return CharLM(
        0,
        dtype,
        vocab=40,
        hidden=64,
        intermediate=96,
        layers=1,
        heads=2,
        kv_heads=2,
        context=96,
        chars=30,
        device=DEVICE,
    )


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_triton_engine_scores_equal_decode_steps(dtype: torch.dtype) -> None:
    """The engine with ``kernels="triton"`` keeps step sizes (no row bucket) and a score of k
    tokens gives the logits of k one-token steps, at random positions."""
    model = _triton_lm(dtype)
    runtime = model.enable_fast(kernels="triton", cuda_graphs=False)
    assert runtime.exact and runtime.config.step_buckets == tuple(range(1, 17))
    assert model.fast.model.row_invariant_steps()
    rng = random.Random(4)
    tokens = [rng.randrange(3, 40) for _ in range(16)]
    for k in (2, 7, 16):
        prompt = "".join(rng.choice("abcdef") for _ in range(rng.randint(1, 40)))
        state = model.prefill(Request(prompt))
        steps = torch.cat([model.score(state, torch.tensor([t])).logits for t in tokens[:k]])
        state = model.prefill(Request(prompt))
        assert torch.equal(model.score(state, torch.tensor(tokens[:k])).logits, steps), f"k={k}"


@pytest.mark.gpu
@pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs CUDA (graphs, the compiled kernels)"
)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_cuda_greedy_speculative_output_is_target_only_output(dtype: torch.dtype) -> None:
    """On CUDA with graphs and the Triton kernels: randomized prompts, γ 1-15, the target
    drafting for itself and prompt lookup, answers token-identical to target-only."""
    from evspec.decoding.drafters import make_drafter
    from evspec.decoding.engine import generate

    model = _triton_lm(dtype)
    assert model.enable_fast(kernels="triton").exact
    rng = random.Random(9)
    for case in range(40):
        q = "".join(rng.choice("abcdef") for _ in range(rng.randint(1, 40)))
        ref = generate(model, Request(q), None, max_new_tokens=40, stop_at_eos=False).tokens
        for kind in ("self", "prompt-lookup"):
            got = generate(
                model,
                Request(q),
                make_drafter(kind, target=model),
                gamma=rng.randint(1, 15),
                max_new_tokens=40,
                stop_at_eos=False,
            ).tokens
            assert got == ref, f"{kind} case {case}"
