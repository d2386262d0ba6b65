"""``collect``: both models teacher-forced on the *same* answer, at the same positions."""

from __future__ import annotations

import pytest
import torch

from evspec.training.heads.collect import CollectConfig, collect
from evspec.training.heads.requests import manifest_requests
from evspec.training.heads.store import CollectedData
from evspec.decoding.engine import generate

from heads_helpers import MAX_NEW


def _examples(folder, split="train", n=4):
    return list(CollectedData.open(folder).examples(split, limit=n))


def test_pairs_are_aligned_token_for_token(collected, target, eventgpt):
    data = CollectedData.open(collected)
    shared = data.dims["shared_vocab"]
    n_ex = 0
    for ex in data.examples("train"):
        m = ex.length
        assert ex.target_hidden.shape[0] == ex.draft_hidden.shape[0] == ex.topk_ids.shape[0] == m
        # the drafter was fed the target's answer (ids it lacks as <unk>)
        want = torch.where(ex.answer_ids < shared, ex.answer_ids, torch.zeros_like(ex.answer_ids))
        assert torch.equal(ex.draft_answer_ids, want)
        # the teacher-forced target agrees with its own greedy answer at every position
        assert torch.equal(ex.topk_ids[:, 0], ex.answer_ids)
        n_ex += 1
    assert n_ex == data.count("train") == 28


def test_answer_is_the_engines_target_only_output(collected, micro_world, target, eventgpt):
    items = manifest_requests(micro_world, ("train",), num_frames=target.num_frames,
                              n_event_images=eventgpt.n_event_images, canvas="sensor", limit=3)
    stored = {e.key: e for e in _examples(collected, n=10)}
    for item in items:
        result = generate(target, item.load(), None, max_new_tokens=MAX_NEW)
        assert result.tokens == stored[item.key].answer_ids.tolist()


@torch.inference_mode()
def test_hidden_states_match_incremental_decoding_of_the_answer(collected, micro_world, target, eventgpt):
    """Position j of both models = the state after the prompt and x_0..x_{j-1}: recompute
    each by feeding the stored answer one token at a time, as the engine does."""
    item = manifest_requests(micro_world, ("train",), num_frames=target.num_frames,
                             n_event_images=eventgpt.n_event_images, canvas="sensor", limit=1)[0]
    ex = {e.key: e for e in _examples(collected, n=8)}[item.key]
    request = item.load()
    for model, stored, ids in ((target, ex.target_hidden, ex.answer_ids),
                               (eventgpt, ex.draft_hidden, ex.draft_answer_ids)):
        state = model.prefill(request, return_hidden=True)
        states = [state.last_hidden]
        for tok in ids[:-1].tolist():
            states.append(model.score(state, torch.tensor([tok]), return_hidden=True).hidden[-1])
        torch.testing.assert_close(torch.stack(states), stored, atol=2e-4, rtol=1e-4)


def test_collect_resumes_and_refuses_other_settings(collected, micro_world, target, eventgpt):
    cfg = CollectConfig(split="train", limit=28, max_new_tokens=MAX_NEW, chunk_size=16, store_dtype="float32",
                        prefill_memory=True, video_features=True, canvas="sensor")
    before = CollectedData.open(collected).count("train")
    report = collect(cfg, target, eventgpt, micro_world, collected, progress=False)
    assert report.written == 0 and report.skipped == before
    other = CollectConfig(split="train", limit=28, max_new_tokens=MAX_NEW + 2, chunk_size=16, store_dtype="float32",
                          prefill_memory=True, canvas="sensor")
    with pytest.raises(ValueError, match="other settings"):
        collect(other, target, eventgpt, micro_world, collected, progress=False)


def test_shards_and_time_budget(tmp_path, micro_world, target, eventgpt):
    out = tmp_path / "sharded"
    for shard in (0, 1):
        cfg = CollectConfig(split="val", max_new_tokens=4, chunk_size=2, store_dtype="float32",
                            video_features=False, shard=shard, num_shards=2)
        collect(cfg, target, eventgpt, micro_world, out, progress=False)
    data = CollectedData.open(out)
    keys = [e.key for e in data.examples("val")]
    all_keys = [i.key for i in manifest_requests(micro_world, ("val",), num_frames=target.num_frames,
                                                 n_event_images=eventgpt.n_event_images)]
    assert sorted(keys) == sorted(all_keys)
    assert data.examples("val").__next__().video_features is None
    cfg = CollectConfig(split="test", max_new_tokens=4, time_budget_s=1e-9)
    report = collect(cfg, target, eventgpt, micro_world, tmp_path / "budget", progress=False)
    assert report.stopped_early and report.written == 0


def test_collect_config_errors_say_how_to_fix():
    with pytest.raises(ValueError, match="split"):
        CollectConfig(split="training")
    with pytest.raises(ValueError, match="shard"):
        CollectConfig(shard=2, num_shards=2)
    with pytest.raises(ValueError, match="store_dtype"):
        CollectConfig(store_dtype="int8")
