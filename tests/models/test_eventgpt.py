"""EventGPT, our implementation: parity with a reference composition of HF modules, the
prompt and event layout, pooling, KV rollback, and the presets (the 7B names).

The official checkpoint layout is tested in ``test_eventgpt_checkpoint.py``, clear errors
on bad input in ``test_eventgpt_errors.py``; both take their helpers (``QUESTION``,
``tiny_config``, ``event_images``, ``request``) from here.  Everything runs on the CPU
with tiny models built from configs; nothing is downloaded.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from torch import nn
from transformers import CLIPImageProcessorPil, CLIPVisionModel, LlamaForCausalLM

from evspec.decoding.protocols import Target
from evspec.models.eventgpt import (
    EVENT_TOKEN_INDEX,
    EventGPT,
    EventGPTConfig,
    EventGPTModel,
    build_model,
)
from evspec.models.eventgpt_loader import VISION_PREFIX
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


def test_preset_table_is_consistent() -> None:
    assert set(EVENTGPT_PRESETS) == {"tiny-random", "7b"}
    cfg = get_preset("tiny-random").config()
    assert (cfg.tokens_per_image, cfg.n_event_images, cfg.llama.vocab_size) == (17, 5, 259)
