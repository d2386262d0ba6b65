"""Every module trains on the micro data (its loss falls), checkpoints round-trip, runs resume."""

from __future__ import annotations

import json

import pytest
import torch

from evspec.training.heads.batch import batches
from evspec.modules.checkpoint import MODULE_KINDS, fingerprint, load_checkpoint, same_fingerprint
from evspec.training.heads.store import CollectedData
from evspec.training.heads.tasks import evaluate_task
from evspec.training.heads.train import TrainConfig, make_task, train
from evspec.modules.options import ModuleOptions, module_config
from heads_helpers import fresh_eventgpt, fresh_target, train_config


def _train_loss(kind: str, data_dir, state=None) -> dict[str, float]:
    """Loss and top-1 over the whole train split, fresh init (seed 0) or with ``state``."""
    data = CollectedData.open(data_dir)
    cfg = train_config(kind)
    torch.manual_seed(cfg.seed)
    task = make_task(kind, module_config(kind, data.dims, cfg.options), data, cfg.loss_weights,
                     device=torch.device("cpu"), depth=cfg.depth,
                     draft_model=fresh_eventgpt() if kind == "lora" else None)
    if state is not None:
        task.load_state(state)
    return evaluate_task(task, batches(data, "train", 16, memory=task.memory, video=task.video))


@pytest.mark.parametrize("kind", MODULE_KINDS)
def test_module_trains_and_its_loss_falls(kind, collected, trained):
    out = trained[kind]
    before = _train_loss(kind, collected)
    ckpt = load_checkpoint(out / "last")
    assert ckpt.meta["step"] == train_config(kind).steps
    after = _train_loss(kind, collected, ckpt.state)
    assert after["loss"] < 0.95 * before["loss"], (before, after)
    assert after["top1"] > before["top1"], (before, after)
    # what training wrote: best/ and last/ with config, the loss curves, the history
    assert ckpt.kind == kind and ckpt.meta["dims"] == CollectedData.open(collected).dims
    assert (out / "best" / "config.json").is_file() and (out / "loss.png").stat().st_size > 1000
    history = [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]
    assert {h["kind"] for h in history} == {"train", "val"}


def test_checkpoint_round_trip_and_resume(collected, tmp_path):
    out = tmp_path / "eh"
    train(train_config("event-head", steps=10), collected, out, progress=False)
    ckpt = load_checkpoint(out / "last")
    head = ckpt.build()
    again = load_checkpoint(out / "last").build()
    for (k, a), (_, b) in zip(head.state_dict().items(), again.state_dict().items()):
        assert torch.equal(a, b), k
    assert head.config.memory_source == "events" and head.config.hidden_size == 64
    x = torch.randn(1, 3, 64)
    mem = torch.randn(1, 4, 64)
    with torch.no_grad():
        torch.testing.assert_close(head.forward_train(x, x, memory=mem)[0], again.forward_train(x, x, memory=mem)[0])
    # resume: continues from step 10 to 15, keeps the history
    result = train(train_config("event-head", steps=15), collected, out, progress=False)
    assert result.steps == 15
    steps = [json.loads(line)["step"] for line in (out / "history.jsonl").read_text().splitlines()]
    assert steps[0] == 1 and max(steps) == 15 and 10 in steps
    with pytest.raises(ValueError, match="different module"):
        train(train_config("target-head", steps=15), collected, out, progress=False)


def test_fingerprint_tells_targets_apart(target):
    from evspec.models.target import VideoLlavaTarget

    w = target.lm_head.weight
    assert same_fingerprint(fingerprint(w), fingerprint(w.to(torch.bfloat16).float()))
    other = VideoLlavaTarget.from_preset("tiny-random", seed=5)
    assert not same_fingerprint(fingerprint(w), fingerprint(other.lm_head.weight))
    assert same_fingerprint(fingerprint(w), fingerprint(fresh_target().lm_head.weight))


def test_train_config_errors():
    with pytest.raises(ValueError, match="kind"):
        TrainConfig(kind="medusa")
    with pytest.raises(ValueError, match="steps"):
        TrainConfig(kind="bottleneck", steps=0)
    with pytest.raises(ValueError, match="memory_source"):
        ModuleOptions(memory_source="video")


def test_a_lora_checkpoint_is_a_peft_adapter_folder(trained) -> None:
    """``PeftModel.from_pretrained`` loads the folder; its outputs equal the merged drafter's."""
    from peft import PeftModel

    from evspec.modules.lora import LoraSpec, distilled_eventgpt

    folder = trained["lora"] / "best"
    ckpt = load_checkpoint(folder)
    base = fresh_eventgpt()
    merged = distilled_eventgpt(base, LoraSpec.from_dict(ckpt.config), ckpt.state).model
    peft_model = PeftModel.from_pretrained(fresh_eventgpt().model, folder).eval()
    ids = torch.randint(3, 50, (1, 7))
    with torch.no_grad():
        want = merged.model(input_ids=ids).last_hidden_state
        got = peft_model.base_model.model.model(input_ids=ids).last_hidden_state
        plain = base.model.model(input_ids=ids).last_hidden_state
    assert torch.allclose(got, want, atol=1e-5)
    assert not torch.allclose(plain, want, atol=1e-5)  # the adapters do change the model
