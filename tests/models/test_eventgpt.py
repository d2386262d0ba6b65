"""EventGPT, our implementation: parity with a reference composition of HF modules, the
official checkpoint layout, the 7B names, KV rollback, and clear errors on bad input.

Everything runs on the CPU with tiny models built from configs; nothing is downloaded.
"""

from __future__ import annotations

import copy
import io
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import (
    CLIPConfig,
    CLIPImageProcessorPil,
    CLIPModel,
    CLIPVisionModel,
    LlamaConfig,
    LlamaForCausalLM,
)

from evspec.decoding.protocols import Target
from evspec.models.eventgpt import (
    EV_END,
    EV_START,
    EVENT_TOKEN_INDEX,
    EventGPT,
    EventGPTConfig,
    EventGPTModel,
    build_model,
)
from evspec.models.eventgpt_loader import VISION_PREFIX, save_eventgpt
from evspec.models.presets.eventgpt import EVENTGPT_PRESETS, clip_l14_336, get_preset
from evspec.models.request import Request
from evspec.models.tokenizer import byte_tokenizer

QUESTION = "What is moving?"


def tiny_config(**overrides) -> EventGPTConfig:
    return replace(get_preset("tiny-random").config(), **overrides)


def event_images(seed: int = 0, n: int = 5, h: int = 40, w: int = 48) -> np.ndarray:
    """White canvases with random red/blue event pixels, like rendered event images."""
    rng = np.random.default_rng(seed)
    img = np.full((n, h, w, 3), 255, dtype=np.uint8)
    mask = rng.random((n, h, w)) < 0.2
    pol = rng.random((n, h, w)) < 0.5
    img[mask & pol] = (255, 0, 0)
    img[mask & ~pol] = (0, 0, 255)
    return img


def request(seed: int = 0, question: str = QUESTION) -> Request:
    return Request(question=question, event_images=event_images(seed))


@pytest.fixture(scope="module")
def tiny() -> EventGPT:
    return EventGPT.from_preset("tiny-random", seed=0)


# -- the reference: HF modules composed independently ----------------------------------------


def strip(sd: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix) :]: v for k, v in sd.items() if k.startswith(prefix)}


def reference_logits(
    model: EventGPTModel, prompt_ids: torch.Tensor, images: np.ndarray, extra: list[int]
) -> torch.Tensor:
    """CLIPVisionModel last_hidden_state (CLS incl.) -> Linear/GELU/Linear -> adaptor ->
    spatio-temporal mean pooling -> splice at -200 -> LlamaForCausalLM logits ``[T, V]``."""
    cfg = model.config
    sd = model.state_dict()
    size = cfg.vision.image_size
    processor = CLIPImageProcessorPil(
        size={"shortest_edge": size}, crop_size={"height": size, "width": size}
    )
    pixels = processor(list(images), return_tensors="pt")["pixel_values"]  # [n, 3, S, S]

    clip = CLIPVisionModel(cfg.vision).eval()
    clip.load_state_dict(strip(sd, VISION_PREFIX))
    hidden, vision_hidden = cfg.llama.hidden_size, cfg.vision.hidden_size
    projector = nn.Sequential(nn.Linear(vision_hidden, hidden), nn.GELU(), nn.Linear(hidden, hidden))
    projector.load_state_dict(strip(sd, "model.visual_projector."))
    llm = LlamaForCausalLM(cfg.llama).eval()
    llm.load_state_dict(
        {k: v for k, v in sd.items() if k.startswith(("model.embed_tokens", "model.layers", "model.norm", "lm_"))}
    )
    with torch.no_grad():
        feats = projector(clip(pixel_values=pixels).last_hidden_state)  # [n, P, H]
        if cfg.event_feature_adaptor:
            adaptor = nn.Linear(hidden, hidden)
            adaptor.load_state_dict(strip(sd, "model.feature_adaptor."))
            feats = adaptor(feats)
        events = torch.cat([feats.mean(dim=1), feats.mean(dim=0)])  # [n + P, H]
        ids = prompt_ids.tolist()
        pos = ids.index(EVENT_TOKEN_INDEX)
        embed = llm.get_input_embeddings()
        seq = torch.cat(
            [
                embed(torch.tensor(ids[:pos])),
                events,
                embed(torch.tensor(ids[pos + 1 :] + extra, dtype=torch.long)),
            ]
        )
        return llm(inputs_embeds=seq[None]).logits[0].float()


@pytest.mark.parametrize("adaptor", [True, False])
def test_parity_with_reference_composition(adaptor: bool) -> None:
    wrapper = EventGPT(build_model(tiny_config(event_feature_adaptor=adaptor), seed=3), byte_tokenizer())
    assert ("model.feature_adaptor.weight" in wrapper.model.state_dict()) is adaptor
    req = request(1)
    prompt_ids = wrapper.build_prompt_ids(req.question)
    extra = [70, 71, 72]
    ref = reference_logits(wrapper.model, prompt_ids, req.event_images, extra)  # [T + 3, V]

    state = wrapper.prefill(req)
    length = len(prompt_ids) - 1 + 5 + 17
    assert state.length == length == ref.shape[0] - len(extra)
    torch.testing.assert_close(state.last_logits, ref[length - 1], atol=1e-5, rtol=1e-5)
    out = wrapper.score(state, torch.tensor(extra))
    torch.testing.assert_close(out.logits, ref[length:], atol=1e-5, rtol=1e-5)


def test_prompt_format_and_event_layout(tiny: EventGPT) -> None:
    ids = tiny.build_prompt_ids(QUESTION)
    assert ids[0].item() == 1 and (ids == 1).sum() == 1  # BOS once
    assert (ids == EVENT_TOKEN_INDEX).sum() == 1
    pos = int((ids == EVENT_TOKEN_INDEX).nonzero()[0, 0])
    before = tiny.tokenizer.decode(ids[1:pos].tolist())
    after = tiny.tokenizer.decode(ids[pos + 1 :].tolist())
    assert before.startswith("A chat between a curious human and an artificial intelligence assistant.")
    assert before.endswith("questions. USER: ")
    assert after == f"\n{QUESTION} ASSISTANT:"

    state = tiny.prefill(request())
    start, end = state.extra["event_span"]
    assert (start, end) == (pos, pos + 5 + 17)
    assert state.extra["event_embeds"].shape == (22, 64)
    assert (state.prompt_ids[start:end] == EVENT_TOKEN_INDEX).all()
    assert state.prompt_ids.numel() == state.length
    assert {"preprocess_ms", "vision_ms", "prefill_ms"} <= set(state.timings)
    assert tiny.prefill(request(), return_hidden=True).last_hidden.shape == (64,)
    assert isinstance(tiny, Target)  # usable wherever the engine takes a target or drafter model


def test_pooling_shapes_and_pixels_matter(tiny: EventGPT) -> None:
    pixels = tiny.preprocess(event_images(0, n=3))
    assert pixels.shape == (3, 3, 32, 32)
    assert tiny.model.encode_events(pixels).shape == (3 + 17, 64)  # n temporal + P spatial
    # A 32x32 image is not resized: preprocessing is exactly CLIP's mean/std.
    square = event_images(0, n=1, h=32, w=32)
    mean = torch.tensor([0.48145466, 0.4578275, 0.40821073])[:, None, None]
    std = torch.tensor([0.26862954, 0.26130258, 0.27577711])[:, None, None]
    want = (torch.from_numpy(square[0]).permute(2, 0, 1).float() / 255 - mean) / std
    torch.testing.assert_close(tiny.preprocess(square)[0], want, atol=1e-5, rtol=1e-5)
    # Changing the events changes the answer distribution.
    a, b = tiny.prefill(request(0)), tiny.prefill(request(1))
    assert not torch.allclose(a.last_logits, b.last_logits)


def test_kv_rollback_then_refeed_equals_full_forward(tiny: EventGPT) -> None:
    req = request(2)
    state = tiny.prefill(req)
    tiny.score(state, torch.tensor([40, 41, 42, 43]))
    tiny.rollback(state, 2)
    assert state.length == state.cache.get_seq_length()
    refed = tiny.score(state, torch.tensor([90, 91]))

    prompt_ids = tiny.build_prompt_ids(req.question)
    full_ids = torch.cat([prompt_ids, torch.tensor([40, 41, 90, 91])])
    with torch.no_grad():
        full = tiny.model(full_ids, tiny.preprocess(req.event_images)).float()  # [T, V]
    torch.testing.assert_close(refed.logits, full[-2:], atol=1e-4, rtol=1e-4)
    fresh = tiny.prefill(req)
    fresh_out = tiny.score(fresh, torch.tensor([40, 41, 90, 91]))
    torch.testing.assert_close(refed.logits, fresh_out.logits[-2:], atol=1e-5, rtol=1e-5)


# -- presets -----------------------------------------------------------------------------------


def official_7b_names() -> set[str]:
    names = {"model.embed_tokens.weight", "model.norm.weight", "lm_head.weight"}
    for i in range(32):
        p = f"model.layers.{i}."
        names |= {p + f"self_attn.{x}_proj.weight" for x in "qkvo"}
        names |= {p + f"mlp.{x}_proj.weight" for x in ("gate", "up", "down")}
        names |= {p + "input_layernorm.weight", p + "post_attention_layernorm.weight"}
    names |= {f"model.visual_projector.{i}.{w}" for i in (0, 2) for w in ("weight", "bias")}
    names |= {"model.feature_adaptor.weight", "model.feature_adaptor.bias"}
    return names


def test_7b_preset_on_meta_has_the_official_weight_names() -> None:
    big = EventGPT.from_preset("7b", device="meta")
    sd = big.model.state_dict()
    vision = {k for k in sd if k.startswith(VISION_PREFIX)}
    assert set(sd) - vision == official_7b_names()
    with torch.device("meta"):
        clip = CLIPVisionModel(clip_l14_336())
    assert {k[len(VISION_PREFIX) :] for k in vision} == set(clip.state_dict())
    assert sd["model.embed_tokens.weight"].shape == (32000, 4096)
    assert sd["lm_head.weight"].shape == (32000, 4096)
    assert sd["model.visual_projector.0.weight"].shape == (4096, 1024)
    assert sd["model.feature_adaptor.weight"].shape == (4096, 4096)
    assert sd["model.layers.31.mlp.down_proj.weight"].shape == (4096, 11008)
    assert sd[VISION_PREFIX + "embeddings.position_embedding.weight"].shape == (577, 1024)
    assert big.config.tokens_per_image == 577 and big.n_event_images == 5
    assert (big.max_context, big.vocab_size, big.eos_token_id) == (2048, 32000, 2)
    assert big.tokenizer.bos_token_id == 1 and len(big.tokenizer) == 32000
    ids = big.build_prompt_ids(QUESTION)
    assert big.prompt_length(ids, 5) == len(ids) - 1 + 582


def test_7b_standin_shares_ids_with_the_target_standin() -> None:
    target_presets = pytest.importorskip("evspec.models.presets.target")
    from evspec.models.tokenizer import shared_vocab_size

    ours = get_preset("7b").tokenizer()
    theirs = target_presets.preset_tokenizer(target_presets.get_preset("7b"))
    assert shared_vocab_size(ours, theirs) == 32000


def test_presets_are_seeded_and_build_in_dtype() -> None:
    a = EventGPT.from_preset("tiny-random", seed=5).model.state_dict()
    b = EventGPT.from_preset("tiny-random", seed=5).model.state_dict()
    c = EventGPT.from_preset("tiny-random", seed=6).model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    key = "model.layers.0.mlp.up_proj.weight"
    assert not torch.equal(a[key], c[key])
    half = EventGPT.from_preset("tiny-random", dtype=torch.bfloat16)
    assert {p.dtype for p in half.model.parameters()} == {torch.bfloat16}
    assert torch.get_default_dtype() == torch.float32  # restored
    assert half.prefill(request()).last_logits.dtype == torch.float32


# -- the official checkpoint layout -------------------------------------------------------------


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


# -- bad input: clear errors, nothing half-done ----------------------------------------------------


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


def test_preset_table_is_consistent() -> None:
    assert set(EVENTGPT_PRESETS) == {"tiny-random", "7b"}
    cfg = get_preset("tiny-random").config()
    assert (cfg.tokens_per_image, cfg.n_event_images, cfg.llama.vocab_size) == (17, 5, 259)
