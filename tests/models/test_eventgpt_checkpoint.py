"""EventGPT's official checkpoint layout: save / load round trips (single file, safetensors
shards, ``.bin`` shards), the CLIP from ``mm_visual_tower`` or ``clip_path``, the
``<ev_start>``/``<ev_end>`` tokens with resized embeddings, a SentencePiece tokenizer.

CPU only, tiny models built from configs; helpers from ``test_eventgpt.py``.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import CLIPConfig, CLIPModel, LlamaConfig

from evspec.models.eventgpt import (
    EV_END,
    EV_START,
    EVENT_TOKEN_INDEX,
    EventGPT,
    EventGPTModel,
    build_model,
)
from evspec.models.eventgpt_loader import VISION_PREFIX, save_eventgpt
from evspec.models.tokenizer import byte_tokenizer
from test_eventgpt import QUESTION, request, tiny_config


@pytest.fixture(scope="module")
def tiny() -> EventGPT:
    return EventGPT.from_preset("tiny-random", seed=0)


def logits_of(model: EventGPT) -> torch.Tensor:
    state = model.prefill(request(4))
    return torch.cat([state.last_logits[None], model.score(state, torch.tensor([50, 60])).logits])


def test_checkpoint_roundtrip_in_official_layout(tiny: EventGPT, tmp_path: Path) -> None:
    tiny.save_pretrained(tmp_path)
    raw = json.loads((tmp_path / "config.json").read_text())
    assert raw["model_type"] == "EventChat_llama"
    assert raw["event_feature_adaptor"] is True and raw["mm_hidden_size"] == 32
    assert raw["mm_use_im_start_end"] is False and raw["mm_use_im_patch_token"] is False
    assert (raw["hidden_size"], raw["num_hidden_layers"], raw["vocab_size"]) == (64, 2, 259)
    assert set(load_file(tmp_path / "model.safetensors")) == set(tiny.model.state_dict())
    loaded = EventGPT.from_pretrained(tmp_path)
    assert torch.equal(logits_of(loaded), logits_of(tiny))
    assert torch.equal(logits_of(EventGPT.load(str(tmp_path))), logits_of(tiny))


def test_sharded_safetensors_and_bin_shards_load(tiny: EventGPT, tmp_path: Path) -> None:
    want = logits_of(tiny)
    save_eventgpt(tiny.model, tiny.tokenizer, tmp_path / "st", max_shard_bytes=200_000)
    assert (tmp_path / "st" / "model.safetensors.index.json").is_file()
    assert torch.equal(logits_of(EventGPT.from_pretrained(tmp_path / "st")), want)

    # pytorch_model-*.bin shards + index, as older releases ship (with a stale rotary buffer).
    folder = tmp_path / "bin"
    tiny.save_pretrained(folder)
    sd = load_file(folder / "model.safetensors")
    (folder / "model.safetensors").unlink()
    names = sorted(sd)
    halves = {
        "pytorch_model-00001-of-00002.bin": names[::2],
        "pytorch_model-00002-of-00002.bin": names[1::2],
    }
    for file, keys in halves.items():
        shard = {k: sd[k] for k in keys}
        if file.endswith("1-of-00002.bin"):
            shard["model.layers.0.self_attn.rotary_emb.inv_freq"] = torch.ones(8)
        torch.save(shard, folder / file)
    index = {"weight_map": {k: f for f, keys in halves.items() for k in keys}}
    (folder / "pytorch_model.bin.index.json").write_text(json.dumps(index))
    assert torch.equal(logits_of(EventGPT.from_pretrained(folder)), want)


def save_clip_model(model: EventGPTModel, folder: Path) -> None:
    """A CLIPModel checkpoint (as ``openai/clip-vit-large-patch14-336`` ships) holding the
    tower's vision weights under ``vision_model.*``."""
    vision = model.config.vision.to_dict()
    text = dict(
        hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
        vocab_size=100, bos_token_id=0, eos_token_id=1, pad_token_id=1,
    )  # fmt: skip
    clip = CLIPModel(CLIPConfig(vision_config=vision, text_config=text, projection_dim=32))
    tower = model.model.visual_tower.visual_tower.vision_model.state_dict()
    missing, _ = clip.vision_model.load_state_dict(tower, strict=False)
    assert not [k for k in missing if "position_ids" not in k]
    clip.save_pretrained(folder)


def test_clip_from_mm_visual_tower_folder_or_clip_path(tiny: EventGPT, tmp_path: Path) -> None:
    want = logits_of(tiny)
    save_clip_model(tiny.model, tmp_path / "clip")
    folder = tmp_path / "release"
    save_eventgpt(tiny.model, tiny.tokenizer, folder, include_vision=False)
    assert not any(k.startswith(VISION_PREFIX) for k in load_file(folder / "model.safetensors"))
    raw = json.loads((folder / "config.json").read_text())
    raw.pop("vision_config")  # the release has no such key: the shape comes from the CLIP folder
    raw.pop("num_event_images")
    raw["mm_visual_tower"] = str(tmp_path / "clip")
    (folder / "config.json").write_text(json.dumps(raw))
    assert torch.equal(logits_of(EventGPT.from_pretrained(folder)), want)

    raw["mm_visual_tower"] = "openai/clip-vit-base-patch32"  # not local, not CLIP-L
    (folder / "config.json").write_text(json.dumps(raw))
    with pytest.raises(ValueError, match="clip_path"):
        EventGPT.from_pretrained(folder)
    assert torch.equal(logits_of(EventGPT.from_pretrained(folder, clip_path=tmp_path / "clip")), want)


def test_start_end_tokens_are_added_and_embeddings_resized(tmp_path: Path) -> None:
    cfg = tiny_config(mm_use_im_start_end=True, mm_use_im_patch_token=True)
    model = build_model(cfg, seed=1)
    save_eventgpt(model, byte_tokenizer(), tmp_path / "a")  # tokenizer without the event tokens
    loaded = EventGPT.from_pretrained(tmp_path / "a")
    assert len(byte_tokenizer()) == 259  # the shared tokenizer was not touched
    assert len(loaded.tokenizer) == loaded.vocab_size == 262
    head = loaded.lm_head.weight
    torch.testing.assert_close(head[259:], head[:259].mean(0).expand(3, -1))
    ids = loaded.build_prompt_ids(QUESTION).tolist()
    start, end = loaded.tokenizer.convert_tokens_to_ids([EV_START, EV_END])
    pos = ids.index(EVENT_TOKEN_INDEX)
    assert ids[pos - 1 : pos + 2] == [start, EVENT_TOKEN_INDEX, end]
    want = logits_of(loaded)
    assert want.shape[-1] == 262
    loaded.save_pretrained(tmp_path / "b")  # now the tokens and rows are in the checkpoint
    assert torch.equal(logits_of(EventGPT.from_pretrained(tmp_path / "b")), want)


def test_sentencepiece_tokenizer_model_loads(tmp_path: Path) -> None:
    spm = pytest.importorskip("sentencepiece")
    text = [
        "A chat between a curious human and an artificial intelligence assistant.",
        "What is moving? USER: ASSISTANT:",
    ] * 40
    buffer = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(text), model_writer=buffer, vocab_size=320, model_type="bpe",
        byte_fallback=True, unk_id=0, bos_id=1, eos_id=2, pad_id=-1, minloglevel=3,
    )  # fmt: skip
    cfg = tiny_config(llama=LlamaConfig(**{**tiny_config().llama.to_dict(), "vocab_size": 320}))
    save_eventgpt(build_model(cfg, seed=2), byte_tokenizer(), tmp_path)
    for f in ("tokenizer.json", "tokenizer_config.json"):
        (tmp_path / f).unlink()
    (tmp_path / "tokenizer.model").write_bytes(buffer.getvalue())
    tok_cfg = {"tokenizer_class": "LlamaTokenizer", "add_bos_token": True, "legacy": True}
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(tok_cfg))
    loaded = EventGPT.from_pretrained(tmp_path)
    ids = loaded.build_prompt_ids(QUESTION).tolist()
    assert ids[0] == 1 and ids.count(1) == 1 and ids.count(EVENT_TOKEN_INDEX) == 1
    assert loaded.decode_text([i for i in ids if i >= 0]).endswith(f"{QUESTION} ASSISTANT:")
    assert loaded.prefill(request()).last_logits.shape == (320,)
