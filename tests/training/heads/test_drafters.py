"""Trained drafters plugged into the engine: greedy output identical to target-only, the
re-synchronisation invariants, sampling runs, and clear errors for wrong checkpoints."""

from __future__ import annotations

import pytest
import torch

from evspec.decoding.drafters import DrafterError, make_drafter
from evspec.decoding.engine import generate

KINDS = {  # module kind -> (drafter name, option)
    "bottleneck": ("eventgpt-adapter", "adapter_path"),
    "aligner": ("eventgpt-adapter", "adapter_path"),
    "attention": ("eventgpt-adapter", "adapter_path"),
    "lora": ("eventgpt-lora", "lora_path"),
    "target-head": ("target-head", "head_path"),
    "event-head": ("event-head", "head_path"),
}


@pytest.mark.parametrize("kind", list(KINDS))
def test_trained_drafter_is_lossless(kind, ckpts, requests, target, eventgpt):
    name, option = KINDS[kind]
    drafter = make_drafter(f"{name}@{kind}", target=target, draft_model=eventgpt, **{option: ckpts[kind]})
    assert drafter.name == f"{name}@{kind}"
    accepted = 0
    for req in requests:
        base = generate(target, req, None, max_new_tokens=12)
        for gamma in (1, 3):
            spec = generate(target, req, drafter, gamma=gamma, max_new_tokens=12)
            assert spec.tokens == base.tokens, (kind, gamma)
            accepted += spec.stats.accepted
    if kind != "lora":  # trained on these models' answers: some drafts pass
        assert accepted > 0


def test_head_drafter_resyncs_every_round(ckpts, requests, target, eventgpt):
    drafter = make_drafter("event-head", target=target, draft_model=eventgpt, head_path=ckpts["event-head"])
    req = requests[0]
    state = target.prefill(req, return_hidden=True)
    first = int(torch.argmax(state.last_logits))
    drafter.begin(req, target, state, first)
    assert drafter.timings.get("vision_ms", 0) > 0  # the event memory was computed
    draft = drafter.propose(4, 0.0, None)
    assert draft.tokens.numel() == 4 and drafter._cache.length == 4  # 1 verified + 3 speculative
    hidden = torch.randn(3, target.lm_head.weight.shape[1])
    drafter.accept(2, 7, target_hidden=hidden)
    assert drafter._cache.length == 1  # speculative positions dropped
    assert [t for _, t in drafter._pending] == [*draft.tokens[:2].tolist(), 7]
    with pytest.raises(ValueError, match="target_hidden"):
        drafter.propose(2, 0.0, None)
        drafter.accept(0, 3, target_hidden=None)
    drafter.end()


def test_head_drafter_samples_with_a_distribution(ckpts, requests, target):
    drafter = make_drafter("target-head", target=target, head_path=ckpts["target-head"])
    gen = torch.Generator().manual_seed(0)
    base = generate(target, requests[0], drafter, gamma=3, max_new_tokens=10, temperature=0.8, seed=3)
    again = generate(target, requests[0], drafter, gamma=3, max_new_tokens=10, temperature=0.8, seed=3)
    assert base.tokens == again.tokens and len(base.tokens) >= 1  # fixed seed -> same output
    state = target.prefill(requests[0], return_hidden=True)
    drafter.begin(requests[0], target, state, 5)
    draft = drafter.propose(3, 0.8, gen)
    assert draft.probs is not None and draft.probs.shape == (3, target.vocab_size)
    torch.testing.assert_close(draft.probs.sum(-1), torch.ones(3))
    drafter.end()


def test_wrong_checkpoints_are_refused(ckpts, target, eventgpt, tmp_path, monkeypatch):
    import evspec.decoding.drafters as drafters
    from evspec.models.target import VideoLlavaTarget

    other = VideoLlavaTarget.from_preset("tiny-random", seed=7)
    with pytest.raises(DrafterError, match="another target"):
        make_drafter("target-head", target=other, head_path=ckpts["target-head"])
    with pytest.raises(DrafterError, match="not an adapter"):
        make_drafter("eventgpt-adapter", target=target, draft_model=eventgpt, adapter_path=ckpts["event-head"])
    with pytest.raises(DrafterError, match="draft model"):
        make_drafter("event-head", target=target, head_path=ckpts["event-head"])
    with pytest.raises(DrafterError, match="another target"):  # the shipped world head, not for this target
        make_drafter("target-head", target=target)
    monkeypatch.setattr(drafters, "SHIPPED_MODULES", tmp_path / "none")  # no shipped module at all
    with pytest.raises(DrafterError, match="head_path"):
        make_drafter("target-head", target=target)
    # $EVSPEC_ASSETS/world/heads is where shipped modules are looked up when it is set
    other_assets = tmp_path / "assets"
    import shutil

    shutil.copytree(ckpts["target-head"], other_assets / "world" / "heads" / "target-head")
    monkeypatch.setenv("EVSPEC_ASSETS", str(other_assets))
    assert drafters.shipped_modules() == other_assets / "world" / "heads"
    assert make_drafter("target-head", target=target).name == "target-head"


def test_lora_drafter_leaves_the_naive_model_alone(ckpts, target, eventgpt):
    before = eventgpt.model.model.layers[0].self_attn.q_proj.weight.clone()
    drafter = make_drafter("eventgpt-lora", target=target, draft_model=eventgpt, lora_path=ckpts["lora"])
    assert torch.equal(eventgpt.model.model.layers[0].self_attn.q_proj.weight, before)
    merged = drafter.model.model.model.layers[0].self_attn.q_proj
    assert type(merged) is torch.nn.Linear and not torch.equal(merged.weight, before)
