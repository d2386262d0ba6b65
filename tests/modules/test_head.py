"""The draft head: its KV cache reproduces the training forward, and the training-time
test sees exactly the keys drafting sees."""

from __future__ import annotations

import pytest
import torch

from evspec.modules.head import DraftHead, HeadConfig, _ttt_mask


def _head(memory: bool, layers: int = 2) -> DraftHead:
    torch.manual_seed(0)
    cfg = HeadConfig(hidden_size=32, num_layers=layers, num_heads=4,
                     memory_source="events" if memory else "none", memory_size=24 if memory else 0)
    return DraftHead(cfg).eval()


@pytest.mark.parametrize("memory", [False, True])
def test_incremental_cache_equals_teacher_forced_forward(memory):
    head = _head(memory)
    t = 7
    hidden, emb = torch.randn(1, t, 32), torch.randn(1, t, 32)
    mem = torch.randn(1, 5, 24) if memory else None
    with torch.no_grad():
        full = head.forward_train(hidden, emb, memory=mem)[0][0]  # [T, H]
        cache = head.new_cache(None if mem is None else mem[0], capacity=2)  # grows
        parts = [head.extend(cache, hidden[0, :3], emb[0, :3]),
                 head.extend(cache, hidden[0, 3:4], emb[0, 3:4]),
                 head.extend(cache, hidden[0, 4:], emb[0, 4:])]
    torch.testing.assert_close(torch.cat(parts), full, atol=1e-5, rtol=1e-5)
    assert cache.length == t
    cache.truncate(4)  # rollback is a pointer move: re-extending gives the same features
    with torch.no_grad():
        again = head.extend(cache, hidden[0, 4:], emb[0, 4:])
    torch.testing.assert_close(again, full[4:], atol=1e-5, rtol=1e-5)


def test_training_time_test_matches_drafting():
    """Step s output at j == what drafting computes at depth s + 1 after verifying j - s."""
    head = _head(memory=True)
    t, depth = 6, 3
    hidden, emb, mem = torch.randn(1, t, 32), torch.randn(1, t, 32), torch.randn(1, 4, 24)
    with torch.no_grad():
        outs = head.forward_train(hidden, emb, memory=mem, depth=depth)
        for j in range(depth - 1, t):
            v = j - (depth - 1)  # last verified position of the round
            cache = head.new_cache(mem[0])
            f = head.extend(cache, hidden[0, : v + 1], emb[0, : v + 1])[-1]  # step 0 at v
            torch.testing.assert_close(f, outs[0][0, v], atol=1e-5, rtol=1e-5)
            for s in range(1, depth):  # feed the head's own feature at positions v+1 .. j
                f = head.extend(cache, f[None], emb[0, v + s : v + s + 1])[0]
                torch.testing.assert_close(f, outs[s][0, v + s], atol=1e-5, rtol=1e-5)


def test_ttt_mask_rows():
    m = _ttt_mask(4, 2, torch.device("cpu"))  # keys: step0 | step1 | step2
    # query j = 3 at step 2: true keys 0..1, step-1 key at 2, its own step-2 key at 3
    assert m[3].nonzero().flatten().tolist() == [0, 1, 4 + 2, 8 + 3]
    assert m.sum(dim=1).min() >= 1  # no empty rows, even for j < s


def test_head_config_errors_name_the_field():
    with pytest.raises(ValueError, match="num_heads"):
        HeadConfig(hidden_size=30, num_heads=4)
    with pytest.raises(ValueError, match="memory_size"):
        HeadConfig(hidden_size=32, memory_source="events")
    with pytest.raises(ValueError, match="memory_source"):
        HeadConfig(hidden_size=32, memory_source="video")  # type: ignore[arg-type]
    head = _head(memory=True)
    with pytest.raises(ValueError, match="event memory"):
        head.new_cache(None)
