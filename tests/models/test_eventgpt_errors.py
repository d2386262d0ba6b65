"""EventGPT on bad input: clear errors naming the file, key or field, and nothing
half-done (missing files and shards, missing / unexpected / misshaped weights, no vision
source, wrong model type, stale weight files, over-long prompts, bad requests).

CPU only, tiny models built from configs; helpers from ``test_eventgpt.py``.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from evspec.models.eventgpt import EventGPT, build_model
from evspec.models.eventgpt_loader import save_eventgpt
from evspec.models.request import Request
from evspec.models.tokenizer import byte_tokenizer
from test_eventgpt import QUESTION, request, tiny_config


@pytest.fixture(scope="module")
def tiny() -> EventGPT:
    return EventGPT.from_preset("tiny-random", seed=0)


@pytest.fixture()
def release(tiny: EventGPT, tmp_path: Path) -> Path:
    tiny.save_pretrained(tmp_path / "rel")
    return tmp_path / "rel"


def test_missing_files_are_named(release: Path) -> None:
    (release / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match=r"model\.safetensors"):
        EventGPT.from_pretrained(release)
    (release / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"config\.json"):
        EventGPT.from_pretrained(release)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        EventGPT.from_pretrained(release / "nope")


def test_missing_shard_and_tokenizer_are_named(tiny: EventGPT, tmp_path: Path) -> None:
    save_eventgpt(tiny.model, tiny.tokenizer, tmp_path, max_shard_bytes=200_000)
    shard = sorted(tmp_path.glob("model-*.safetensors"))[-1]
    shard.rename(tmp_path / "elsewhere.bin.bak")
    with pytest.raises(FileNotFoundError, match=shard.name):
        EventGPT.from_pretrained(tmp_path)
    (tmp_path / "elsewhere.bin.bak").rename(shard)
    (tmp_path / "tokenizer.json").unlink()
    with pytest.raises(FileNotFoundError, match="tokenizer"):
        EventGPT.from_pretrained(tmp_path)


def rewrite(release: Path, edit) -> None:
    sd = load_file(release / "model.safetensors")
    edit(sd)
    save_file(sd, str(release / "model.safetensors"))


def test_missing_unexpected_and_misshaped_weights_are_named(release: Path) -> None:
    rewrite(release, lambda sd: sd.pop("model.norm.weight"))
    with pytest.raises(ValueError, match=r"missing.*model\.norm\.weight"):
        EventGPT.from_pretrained(release)
    rewrite(release, lambda sd: sd.update({"model.norm.weight": torch.ones(64), "model.x.weight": torch.ones(2)}))
    with pytest.raises(ValueError, match=r"model\.x\.weight"):
        EventGPT.from_pretrained(release)
    rewrite(release, lambda sd: (sd.pop("model.x.weight"), sd.update({"lm_head.weight": torch.zeros(300, 64)})))
    with pytest.raises(ValueError, match=r"'lm_head\.weight' has shape \(300, 64\).*\(259, 64\)"):
        EventGPT.from_pretrained(release)


def test_checkpoint_without_any_vision_source_is_refused(tiny: EventGPT, tmp_path: Path) -> None:
    save_eventgpt(tiny.model, tiny.tokenizer, tmp_path, include_vision=False)
    vision_keys = r"model\.visual_tower\.visual_tower\.vision_model.*clip_path"
    with pytest.raises(FileNotFoundError, match=vision_keys):
        EventGPT.from_pretrained(tmp_path)


def test_wrong_model_type_and_bad_specs(release: Path) -> None:
    raw = json.loads((release / "config.json").read_text())
    (release / "config.json").write_text(json.dumps({**raw, "model_type": "llava_llama"}))
    with pytest.raises(ValueError, match="EventChat_llama"):
        EventGPT.from_pretrained(release)
    with pytest.raises(ValueError, match="neither a preset"):
        EventGPT.load("no-such-model")
    with pytest.raises(ValueError, match="unknown EventGPT preset"):
        EventGPT.from_preset("13b")
    with pytest.raises(ValueError, match="n_event_images must be >= 1"):
        tiny_config(n_event_images=0)
    with pytest.raises(ValueError, match="max_context"):
        tiny_config(max_context=4096)


def test_stale_weight_files_block_a_save(tiny: EventGPT, tmp_path: Path) -> None:
    (tmp_path / "pytorch_model.bin").write_bytes(b"old")
    with pytest.raises(FileExistsError, match=r"pytorch_model\.bin"):
        tiny.save_pretrained(tmp_path)
    assert not (tmp_path / "model.safetensors").exists()


def test_prompt_longer_than_context_fails_before_any_work(tiny: EventGPT, monkeypatch) -> None:
    before = tiny.prefill(request()).last_logits
    monkeypatch.setattr(tiny.model, "encode_events", lambda *_: pytest.fail("vision ran"))
    with pytest.raises(ValueError, match="does not fit EventGPT's context of 2048"):
        tiny.prefill(request(question="x" * 2000))
    monkeypatch.undo()
    assert torch.equal(tiny.prefill(request()).last_logits, before)


def test_bad_requests_are_refused(tiny: EventGPT) -> None:
    with pytest.raises(ValueError, match="event_images"):
        tiny.prefill(Request(question=QUESTION))
    with pytest.raises(ValueError, match="<event>"):
        tiny.build_prompt_ids("what is <event>?")
    with pytest.raises(ValueError, match="exactly one"):
        tiny.model.embed_prompt(torch.tensor([1, 5, 6]), torch.zeros(22, 64))
    with pytest.raises(ValueError, match=r"\(32, 32\)"):
        tiny.model.encode_events(torch.zeros(5, 3, 16, 16))


def test_flagged_start_end_without_tokens_is_refused() -> None:
    model = build_model(tiny_config(mm_use_im_start_end=True), device="meta")
    with pytest.raises(ValueError, match="<ev_start>"):
        EventGPT(model, copy.deepcopy(byte_tokenizer()))
