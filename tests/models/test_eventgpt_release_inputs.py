"""EventGPT gets its inputs exactly as the release builds them.

Facts of the release (public repository xifan-zhang/EventGPT, restated here in our own
words, never its code): the inference prompt is the ``eventgpt_v1`` template with the literal
text ``<ev_start><event><ev_end>\\n`` before the question whatever ``mm_use_im_start_end``
says; the prompt is split at ``<event>`` and every piece tokenised on its own (the first
keeps its BOS, the others drop theirs) with id -200 between; ``mm_use_im_patch_token``
missing from the config counts as True (``<ev_patch>`` joins the vocabulary); each of the n
equal-count chunks is painted on a white canvas of ``max(y) + 1`` by ``max(x) + 1`` of that
chunk alone, event by event in stream order, blue for polarity 0 and red for anything else.

evspec's own small models (the tiny preset, the synthetic world's drafters) keep the bare
prompt they were trained with.
"""

from __future__ import annotations

import io
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from evspec.data.events import EventStream
from evspec.data.render import render_canvas
from evspec.models.eventgpt import (
    EV_END,
    EV_PATCH,
    EV_START,
    EVENT_TOKEN_INDEX,
    SYSTEM_PROMPT,
    EventGPT,
    build_model,
)
from evspec.models.eventgpt_layout import PROMPT_STYLE_KEY, config_from_dict
from evspec.models.eventgpt_loader import save_eventgpt
from evspec.models.presets.eventgpt import get_preset
from evspec.models.request import Request
from evspec.models.tokenizer import byte_tokenizer

from test_eventgpt import QUESTION, event_images, tiny_config

WORLD_DRAFTER = Path(__file__).resolve().parents[2] / "src/evspec/assets/world/drafter"


def release_prompt(question: str) -> str:
    return f"{SYSTEM_PROMPT} USER: <ev_start><event><ev_end>\n{question} ASSISTANT:"


def release_ids(prompt: str, tokenizer) -> list[int]:
    """The release's splitting rule, restated: pieces around ``<event>``, each tokenised."""
    pieces = [tokenizer(piece).input_ids for piece in prompt.split("<event>")]
    bos = tokenizer.bos_token_id
    keep_bos = bool(pieces[0]) and pieces[0][0] == bos
    out = [bos] if keep_bos else []
    for i, piece in enumerate(pieces):
        if i:
            out.append(EVENT_TOKEN_INDEX)
        out.extend(piece[1:] if keep_bos and piece and piece[0] == bos else piece)
    return out


@pytest.fixture(scope="module")
def spm_folder(tmp_path_factory) -> Path:
    """A tiny release-layout folder (no ``evspec_prompt_style``, no ``mm_use_im_patch_token``)
    with a SentencePiece ``tokenizer.model``, as the release ships."""
    spm = pytest.importorskip("sentencepiece")
    text = [SYSTEM_PROMPT, "What is moving? USER: ASSISTANT: <ev_start> <ev_end> cars"] * 40
    buffer = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(text), model_writer=buffer, vocab_size=320, model_type="bpe",
        byte_fallback=True, unk_id=0, bos_id=1, eos_id=2, pad_id=-1, minloglevel=3,
    )  # fmt: skip
    folder = tmp_path_factory.mktemp("release")
    llama = tiny_config().llama.to_dict() | {"vocab_size": 320}
    from transformers import LlamaConfig

    cfg = tiny_config(llama=LlamaConfig(**llama))
    save_eventgpt(build_model(cfg, seed=3), byte_tokenizer(), folder)
    for f in ("tokenizer.json", "tokenizer_config.json"):
        (folder / f).unlink()
    (folder / "tokenizer.model").write_bytes(buffer.getvalue())
    tok_cfg = {"tokenizer_class": "LlamaTokenizer", "add_bos_token": True, "legacy": True}
    (folder / "tokenizer_config.json").write_text(json.dumps(tok_cfg))
    raw = json.loads((folder / "config.json").read_text())
    for key in (PROMPT_STYLE_KEY, "mm_use_im_patch_token"):
        raw.pop(key)
    raw["mm_visual_tower"] = "openai/clip-vit-large-patch14-336"  # the release's (weights inside)
    (folder / "config.json").write_text(json.dumps(raw))
    return folder


def test_release_prompt_ids_match_the_release_rule(spm_folder: Path) -> None:
    model = EventGPT.from_pretrained(spm_folder)
    assert model.config.prompt_style == "release"
    assert model.prompt_text(QUESTION) == release_prompt(QUESTION)
    got = model.build_prompt_ids(QUESTION).tolist()
    assert got == release_ids(release_prompt(QUESTION), model.tokenizer)
    # the tags are ordinary text: no added token in the ids, their pieces spell them out
    added = set(model.tokenizer.convert_tokens_to_ids([EV_START, EV_END]))
    assert not added & set(got)
    pos = got.index(EVENT_TOKEN_INDEX)
    assert model.tokenizer.decode(got[1:pos]).endswith("USER: <ev_start>")
    assert model.tokenizer.decode(got[pos + 1 :]).startswith("<ev_end>")


def test_missing_patch_token_key_adds_ev_patch(spm_folder: Path) -> None:
    model = EventGPT.from_pretrained(spm_folder)
    assert model.config.mm_use_im_patch_token is True
    assert model.tokenizer.convert_tokens_to_ids(EV_PATCH) == 320
    assert len(model.tokenizer) == model.vocab_size == 321
    assert model.prefill(Request(QUESTION, event_images=event_images())).last_logits.shape == (321,)


def test_start_end_tokens_with_the_release_prompt(tmp_path: Path) -> None:
    """With ``mm_use_im_start_end`` the same text holds the tags as single added tokens."""
    model = build_model(tiny_config(prompt_style="release", mm_use_im_start_end=True), seed=1)
    save_eventgpt(model, byte_tokenizer(), tmp_path)
    loaded = EventGPT.from_pretrained(tmp_path)
    ids = loaded.build_prompt_ids(QUESTION).tolist()
    # the byte tokenizer adds no BOS of its own (the release's LLaMA tokenizer does): evspec
    # puts it first either way
    assert ids == [1, *release_ids(release_prompt(QUESTION), loaded.tokenizer)]
    start, end = loaded.tokenizer.convert_tokens_to_ids([EV_START, EV_END])
    pos = ids.index(EVENT_TOKEN_INDEX)
    assert ids[pos - 1 : pos + 2] == [start, EVENT_TOKEN_INDEX, end]


def test_prompt_style_is_declared_and_round_trips(tmp_path: Path) -> None:
    assert get_preset("7b").config().prompt_style == "release"
    assert get_preset("tiny-random").config().prompt_style == "bare"
    bare = EventGPT(build_model(tiny_config(), seed=0), byte_tokenizer())
    assert bare.prompt_text(QUESTION).endswith(" USER: <event>\nWhat is moving? ASSISTANT:")
    release = EventGPT(build_model(tiny_config(prompt_style="release"), seed=0), byte_tokenizer())
    assert release.prompt_text(QUESTION) == release_prompt(QUESTION)
    release.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())[PROMPT_STYLE_KEY] == "release"
    assert EventGPT.from_pretrained(tmp_path).config.prompt_style == "release"
    with pytest.raises(ValueError, match="prompt_style"):
        tiny_config(prompt_style="chat")


def test_world_drafters_keep_their_bare_prompt() -> None:
    if not (WORLD_DRAFTER / "config.json").is_file():
        pytest.skip("world drafter not shipped")
    from transformers import CLIPVisionConfig

    raw = json.loads((WORLD_DRAFTER / "config.json").read_text())
    vision = CLIPVisionConfig(**raw["vision_config"])
    assert config_from_dict(raw, vision).prompt_style == "bare"
    raw.pop(PROMPT_STYLE_KEY, None)  # the rule for folders saved without the key
    assert config_from_dict(raw, vision).prompt_style == "bare"
    raw["mm_visual_tower"] = "openai/clip-vit-large-patch14-336"
    assert config_from_dict(raw, vision).prompt_style == "release"


def release_painting(x, y, p, n: int) -> list[np.ndarray]:
    """The release's rendering restated: equal-count chunks, each on its own canvas."""
    size = len(x) // n
    images = []
    for i in range(n):
        lo, hi = i * size, (len(x) if i == n - 1 else (i + 1) * size)
        img = np.full((int(y[lo:hi].max()) + 1, int(x[lo:hi].max()) + 1, 3), 255, np.uint8)
        for j in range(lo, hi):
            img[y[j], x[j]] = (0, 0, 255) if p[j] == 0 else (255, 0, 0)
        images.append(img)
    return images


def test_per_chunk_canvas_on_the_request_path() -> None:
    rng = np.random.default_rng(4)
    n_events = 300
    # chunks of different extents: the release's canvases differ in size
    x = np.concatenate([rng.integers(0, 20 + 10 * k, 60) for k in range(5)])
    y = np.concatenate([rng.integers(0, 30 - 4 * k, 60) for k in range(5)])
    t = np.arange(n_events) * 100
    p = rng.integers(0, 2, n_events)
    stream = EventStream(x, y, t, p, sensor_size=(64, 48))
    want = release_painting(x, y, p, 5)
    got = render_canvas(stream, 5, "chunk", warn_window=False)
    assert isinstance(got, tuple) and len(got) == 5
    for a, b in zip(got, want):
        np.testing.assert_array_equal(a, b)
    # the model encodes each image on its own, exactly as stacking equal-size ones would
    model = EventGPT(build_model(tiny_config(), seed=0), byte_tokenizer())
    req = Request(QUESTION, event_images=got)
    pixels = model.preprocess(req.event_images)
    for i, img in enumerate(want):
        torch.testing.assert_close(pixels[i : i + 1], model.preprocess(img[None]), rtol=0, atol=0)
    state = model.prefill(req)
    assert state.extra["event_span"][1] - state.extra["event_span"][0] == 5 + 17
    model.enable_prefix_cache()  # the per-clip cache keys differing sizes too
    cached = model.prefill(replace(req, clip_id="clip"))
    again = model.prefill(replace(req, clip_id="clip"))
    assert again.timings.get("prefix_hit")
    torch.testing.assert_close(cached.last_logits, state.last_logits)
    torch.testing.assert_close(again.last_logits, state.last_logits)


def test_equal_size_chunks_stack_into_one_array() -> None:
    images = [np.full((4, 6, 3), 255, np.uint8) for _ in range(3)]
    req = Request(QUESTION, event_images=images)
    assert isinstance(req.event_images, np.ndarray) and req.event_images.shape == (3, 4, 6, 3)
    with pytest.raises(ValueError, match=r"event_images\[1\]"):
        Request(QUESTION, event_images=[images[0], images[1][..., :2]])
    assert replace(req, clip_id="c").event_images is req.event_images


def test_eventgpt_drafts_from_per_chunk_images_losslessly() -> None:
    """The engine with the EventGPT drafter on images of differing sizes: the answer is
    the target's own greedy answer."""
    from evspec.decoding.drafters import make_drafter
    from evspec.decoding.engine import generate
    from evspec.models.target import VideoLlavaTarget

    target = VideoLlavaTarget.from_preset("tiny-random", seed=1)
    draft = EventGPT(build_model(tiny_config(prompt_style="release"), seed=2), byte_tokenizer())
    rng = np.random.default_rng(5)
    video = rng.integers(0, 256, (target.num_frames, 40, 48, 3), dtype=np.uint8)
    images = [event_images(seed=i, n=1, h=30 + 3 * i, w=40 - 2 * i)[0] for i in range(5)]
    req = Request(QUESTION, video=video, event_images=images, clip_id="c")
    assert isinstance(req.event_images, tuple)
    want = generate(target, req, max_new_tokens=8).tokens
    drafter = make_drafter("eventgpt", target=target, draft_model=draft)
    got = generate(target, req, drafter, gamma=3, max_new_tokens=8)
    assert list(got.tokens) == list(want)
