"""Split-KV decode attention: the partition-and-merge equals plain softmax attention over the
visible keys (float32), for MHA/GQA, 1-16 queries, empty chunks and positions inside the kv
bucket; the Triton kernels equal the torch reference (on a GPU, or on the CPU under
``TRITON_INTERPRET=1`` with Triton installed; skipped otherwise)."""

from __future__ import annotations

import pytest
import torch

from evspec.models.fast.decode_attention import (
    choose_splits,
    fits,
    split_kv_attention,
    split_kv_reference,
)
from evspec.models.fast.step_attention import StepAttention
from evspec.models.fast.triton_support import available as triton_available

pytestmark = pytest.mark.triton_kernels  # the kernels run under TRITON_INTERPRET=1 on a CPU


def _plain(q, k, v, pos: int, kv_rows: int, scale: float) -> torch.Tensor:
    hq, t, _ = q.shape
    groups = hq // k.shape[0]
    k, v = k[:, :kv_rows].repeat_interleave(groups, 0), v[:, :kv_rows].repeat_interleave(groups, 0)
    scores = q @ k.transpose(1, 2) * scale  # [Hq, T, kv_rows]
    hidden = torch.arange(kv_rows)[None, :] > (pos + torch.arange(t))[:, None]
    return torch.softmax(scores.masked_fill(hidden, float("-inf")), -1) @ v


CASES = [  # (Hq, Hkv, T, D, capacity, kv_rows, pos, splits)
    (4, 4, 1, 16, 160, 128, 100, 3),
    (4, 2, 9, 16, 160, 160, 140, 4),  # GQA, a score step
    (8, 1, 3, 32, 300, 256, 5, 4),  # MQA; the first query sees 6 keys: chunks 1-3 are empty
    (4, 4, 16, 16, 96, 96, 80, 1),  # one chunk
    (2, 2, 2, 16, 520, 512, 509, None),  # default split choice, last rows of the bucket
]


@pytest.mark.parametrize("case", CASES)
def test_reference_equals_plain_attention(case) -> None:
    hq, hkv, t, d, cap, kv_rows, pos, splits = case
    gen = torch.Generator().manual_seed(hq * 100 + t)
    q = torch.randn(hq, t, d, generator=gen)
    k, v = torch.randn(hkv, cap, d, generator=gen), torch.randn(hkv, cap, d, generator=gen)
    k[:, pos + t:] = 1e4  # rows no query may see (stale or padded) must not count
    want = _plain(q, k, v, pos, kv_rows, 0.25)
    got = split_kv_attention(q, k, v, torch.tensor(pos), kv_rows, 0.25, splits=splits, backend="torch")
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_choose_splits_covers_the_rows_with_whole_blocks() -> None:
    for kv_rows, heads in ((2304, 32), (256, 32), (64, 1), (4096, 8), (100, 4)):
        splits, chunk = choose_splits(kv_rows, heads)
        assert chunk % 64 == 0 and splits * chunk >= kv_rows > (splits - 1) * chunk
    assert choose_splits(2304, 32)[0] >= 8  # 32 heads alone would leave most SMs idle
    with pytest.raises(ValueError, match=">= 1"):
        choose_splits(0, 32)
    with pytest.raises(ValueError, match="evenly"):
        split_kv_attention(torch.zeros(3, 1, 16), torch.zeros(2, 8, 16), torch.zeros(2, 8, 16),
                           torch.tensor(0), 8, 1.0)
    with pytest.raises(ValueError, match="backend"):
        split_kv_attention(torch.zeros(2, 1, 16), torch.zeros(2, 8, 16), torch.zeros(2, 8, 16),
                           torch.tensor(0), 8, 1.0, backend="cuda")


def _device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@pytest.mark.skipif(not triton_available(_device()), reason="needs Triton on a GPU, or TRITON_INTERPRET=1")
@pytest.mark.parametrize("case", CASES)
def test_triton_kernels_equal_the_reference(case) -> None:
    hq, hkv, t, d, cap, kv_rows, pos, splits = case
    dev = _device()
    gen = torch.Generator(device=dev).manual_seed(7)
    q = torch.randn(hq, t, d, generator=gen, device=dev)
    k = torch.randn(hkv, cap, d, generator=gen, device=dev)
    v = torch.randn(hkv, cap, d, generator=gen, device=dev)
    p = torch.tensor([pos], device=dev)
    want = split_kv_attention(q, k, v, p, kv_rows, 0.25, splits=splits, backend="torch")
    got = split_kv_attention(q, k, v, p, kv_rows, 0.25, splits=splits, backend="triton")
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    # q as a score step's layer hands it over (a [T, Hq, D] view) and the output's layout
    strided = q.transpose(0, 1).contiguous().transpose(0, 1)
    assert not strided.is_contiguous() or t == 1
    got_view = split_kv_attention(strided, k, v, p, kv_rows, 0.25, splits=splits, backend="triton")
    torch.testing.assert_close(got_view, want, atol=1e-5, rtol=1e-5)
    assert got_view.transpose(0, 1).is_contiguous()  # [T, Hq, D] storage: the o projection's input is a view
    if dev.type == "cuda":  # bf16, as the engine runs it
        got16 = split_kv_attention(q.bfloat16(), k.bfloat16(), v.bfloat16(), p, kv_rows, 0.25, backend="triton")
        torch.testing.assert_close(got16.float(), want, atol=3e-2, rtol=3e-2)


def test_reference_handles_a_device_start_of_several_positions() -> None:
    """The engine passes its query positions ``[T]``; the first one is the start."""
    gen = torch.Generator().manual_seed(3)
    q = torch.randn(2, 3, 16, generator=gen)
    k, v = torch.randn(2, 64, 16, generator=gen), torch.randn(2, 64, 16, generator=gen)
    a = split_kv_reference(q, k, v, torch.tensor([40, 41, 42]), 64, 0.5, 2, 64)
    torch.testing.assert_close(a, _plain(q, k, v, 40, 64, 0.5), atol=1e-5, rtol=1e-5)


def test_what_the_kernels_take_and_auto_falls_back() -> None:
    """``fits``: the query rows of one KV head fit a block and head_dim is a power of two >= 16;
    ``auto`` picks split-KV only then (and only where Triton runs), else SDPA / matmul."""
    assert fits(32, 32, 1, 128) and fits(32, 8, 9, 128) and fits(4, 4, 16, 16)
    assert not fits(32, 1, 9, 128)  # 288 query rows share the one KV head
    assert not fits(4, 4, 1, 24) and not fits(4, 4, 1, 8)
    cpu = torch.device("cpu")
    odd = StepAttention("auto", 4, 4, 24, 24 ** -0.5)
    assert (odd.kernel_for(1, cpu), odd.kernel_for(5, cpu)) == ("sdpa", "matmul")
    even = StepAttention("auto", 4, 4, 32, 32 ** -0.5)
    assert even.kernel_for(1, cpu) == ("splitkv" if triton_available(cpu) else "sdpa")
