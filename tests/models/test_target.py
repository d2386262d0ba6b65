"""Video-LLaVA target wrapper: parity with the HF forward, KV rollback, pixels used,
HF generate baseline, the 7B shapes (on the meta device), checkpoint errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from evspec.models.presets.target import TARGET_PRESETS, VisionShape, TextShape
from evspec.models.request import Request
from evspec.models.target import VideoLlavaTarget

ATOL = 1e-5


def _frames(n: int, seed: int, h: int = 40, w: int = 48) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def target() -> VideoLlavaTarget:
    return VideoLlavaTarget.from_preset("tiny-random", seed=0)


@pytest.fixture(scope="module")
def request_() -> Request:
    return Request("What is moving?", video=_frames(4, seed=1))


@pytest.fixture(scope="module")
def saved(target: VideoLlavaTarget, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return target.save_pretrained(tmp_path_factory.mktemp("tiny_vl"))


def _hf_logits(target: VideoLlavaTarget, ids: torch.Tensor, video: np.ndarray) -> torch.Tensor:
    """Reference: the HF model's own full forward with ``pixel_values_videos``; [L, V]."""
    pixels = target.preprocess_video(video)  # [T, 3, S, S]
    with torch.inference_mode():
        out = target.model(input_ids=ids[None], pixel_values_videos=pixels[None])
    return out.logits[0].float()


# -- prompt and preprocessing ----------------------------------------------------------------


def test_prompt_has_bos_once_and_expanded_video(target: VideoLlavaTarget) -> None:
    ids = target.build_prompt_ids("What is moving?").tolist()
    n_video = target.num_frames * target.tokens_per_frame
    assert target.tokens_per_frame == 17 and n_video == 68
    assert ids[0] == target.bos_token_id and ids.count(target.bos_token_id) == 1
    first = ids.index(target.video_token_id)
    assert ids[first : first + n_video] == [target.video_token_id] * n_video
    assert ids.count(target.video_token_id) == n_video
    assert target.decode_text(ids[1:first]) == "USER: "
    assert target.decode_text(ids[first + n_video :]) == "\nWhat is moving? ASSISTANT:"


def test_preprocessing_resizes_crops_and_normalises(target: VideoLlavaTarget) -> None:
    video = np.full((4, 40, 60, 3), 128, dtype=np.uint8)
    pixels = target.preprocess_video(video)
    assert pixels.shape == (4, 3, 32, 32) and pixels.dtype == torch.float32
    mean = torch.tensor([0.48145466, 0.4578275, 0.40821073])
    std = torch.tensor([0.26862954, 0.26130258, 0.27577711])
    want = (128 / 255 - mean) / std  # [3]
    torch.testing.assert_close(pixels[:, :, 10, 10], want.expand(4, 3), atol=1e-4, rtol=0)


def test_bad_video_is_named(target: VideoLlavaTarget) -> None:
    with pytest.raises(ValueError, match="has 3 frames .* exactly 4"):
        target.prefill(Request("q?", video=_frames(3, seed=0)))
    with pytest.raises(ValueError, match="needs Request.video"):
        target.prefill(Request("q?"))


def test_prompt_longer_than_context(target: VideoLlavaTarget) -> None:
    long_question = "why " * 200  # 800 bytes > 512 positions
    with pytest.raises(ValueError, match="does not fit the context of 512"):
        target.prefill(Request(long_question, video=_frames(4, seed=0)))


# -- the forward passes ------------------------------------------------------------------------


def test_prefill_matches_hf_forward(target: VideoLlavaTarget, request_: Request) -> None:
    state = target.prefill(request_, return_hidden=True)
    ref = _hf_logits(target, state.prompt_ids, request_.video)  # [L, V]
    assert state.length == state.prompt_ids.numel() == ref.shape[0]
    assert state.last_logits.shape == (target.vocab_size,) == (320,)
    torch.testing.assert_close(state.last_logits, ref[-1], atol=ATOL, rtol=0)
    assert state.last_hidden is not None and state.last_hidden.shape == (64,)
    assert {"preprocess_ms", "vision_ms", "prefill_ms"} <= set(state.timings)
    # the next positions agree too (score runs over the cache the prefill left)
    nxt = torch.tensor([65, 66, 67])
    out = target.score(state, nxt)
    ref2 = _hf_logits(target, torch.cat([state.prompt_ids, nxt]), request_.video)
    torch.testing.assert_close(out.logits, ref2[-3:], atol=ATOL, rtol=0)


def test_changing_frames_changes_logits(target: VideoLlavaTarget, request_: Request) -> None:
    """Fails if the pixels are silently ignored (the 5.17 ``pixel_values=`` trap)."""
    a = target.prefill(request_).last_logits
    b = target.prefill(Request(request_.question, video=255 - request_.video)).last_logits
    assert (a - b).abs().max() > 1e-3
    # and the reference forward sees the change as well
    ids = target.build_prompt_ids(request_.question)
    ra = _hf_logits(target, ids, request_.video)[-1]
    rb = _hf_logits(target, ids, 255 - request_.video)[-1]
    torch.testing.assert_close(b, rb, atol=ATOL, rtol=0)
    assert (ra - rb).abs().max() > 1e-3


def test_rollback_then_refeed_equals_full_forward(
    target: VideoLlavaTarget, request_: Request
) -> None:
    state = target.prefill(request_)
    prompt_len = state.length
    target.score(state, torch.tensor([70, 71, 72, 73, 74]))
    target.rollback(state, 3)
    assert state.length == prompt_len + 2 == state.cache.get_seq_length()
    out = target.score(state, torch.tensor([80, 81, 82]), return_hidden=True)
    assert out.hidden is not None and out.hidden.shape == (3, 64)
    full = torch.cat([state.prompt_ids, torch.tensor([70, 71, 80, 81, 82])])
    ref = _hf_logits(target, full, request_.video)  # [L + 5, V]
    torch.testing.assert_close(out.logits, ref[-3:], atol=ATOL, rtol=0)


@pytest.mark.parametrize("cache_implementation", [None, "static"])
def test_greedy_loop_equals_hf_generate(
    target: VideoLlavaTarget, request_: Request, cache_implementation: str | None
) -> None:
    max_new = 12
    state = target.prefill(request_)
    tokens = [int(state.last_logits.argmax())]
    while len(tokens) < max_new and tokens[-1] != target.eos_token_id:
        out = target.score(state, torch.tensor([tokens[-1]]))
        tokens.append(int(out.logits[-1].argmax()))
    hf_tokens, ms = target.hf_generate(request_, max_new, cache_implementation=cache_implementation)
    assert hf_tokens == tokens
    assert len(set(tokens)) > 1  # a real continuation, not a constant
    assert ms > 0


# -- presets, saving, loading --------------------------------------------------------------------


def test_7b_preset_on_meta() -> None:
    target = VideoLlavaTarget.from_preset("7b", dtype=torch.bfloat16, device="meta")
    cfg = target.config
    assert target.device.type == "meta" and target.dtype == torch.bfloat16
    assert (target.num_frames, target.tokens_per_frame) == (8, 257)
    assert (target.vocab_size, target.max_context, target.eos_token_id) == (32064, 4096, 2)
    assert target.lm_head.weight.shape == (32064, 4096)
    t, v = cfg.text_config, cfg.vision_config
    assert (t.hidden_size, t.num_hidden_layers, t.num_attention_heads, t.intermediate_size) == (
        4096, 32, 32, 11008,
    )
    assert (v.hidden_size, v.num_hidden_layers, v.num_attention_heads, v.intermediate_size) == (
        1024, 24, 16, 4096,
    )
    assert (v.image_size, v.patch_size, cfg.vision_feature_layer) == (224, 14, -2)
    assert (cfg.image_token_index, cfg.video_token_index, t.pad_token_id) == (32000, 32001, 32002)
    assert len(target.decoder.layers) == 32
    ids = target.build_prompt_ids("What is happening in the video?")
    assert int((ids == 32001).sum()) == 8 * 257 == 2056
    assert int((ids == 1).sum()) == 1 and int(ids[0]) == 1
    assert 2056 < ids.numel() < 2120  # ~2090 as with the real tokenizer
    # text is encoded as LLaMA byte-fallback ids (byte b -> 3 + b)
    assert int(ids[1]) == 3 + ord("U")


def test_seeded_random_init() -> None:
    a = VideoLlavaTarget.from_preset("tiny-random", seed=3).lm_head.weight
    b = VideoLlavaTarget.from_preset("tiny-random", seed=3).lm_head.weight
    c = VideoLlavaTarget.from_preset("tiny-random", seed=4).lm_head.weight
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_save_load_roundtrip(target: VideoLlavaTarget, saved: Path, request_: Request) -> None:
    names = {p.name for p in saved.iterdir()}
    want = {"config.json", "model.safetensors", "preprocessor_config.json", "tokenizer.json"}
    assert want <= names
    loaded = VideoLlavaTarget.load(str(saved), seed=5)
    assert (loaded.num_frames, loaded.tokens_per_frame) == (4, 17)
    assert torch.equal(loaded.build_prompt_ids("hi?"), target.build_prompt_ids("hi?"))
    # weights are bit-identical; loaded (mmapped, unaligned) tensors may take other SIMD
    # paths on the CPU, hence a float32-rounding tolerance rather than exact equality
    for name, w in target.model.state_dict().items():
        assert torch.equal(w, loaded.model.state_dict()[name]), name
    torch.testing.assert_close(
        loaded.prefill(request_).last_logits,
        target.prefill(request_).last_logits,
        atol=1e-6,
        rtol=0,
    )


def test_num_frames_override_survives_saving(tmp_path: Path) -> None:
    two = VideoLlavaTarget.from_preset("tiny-random", num_frames=2)
    assert two.build_prompt_ids("q?").tolist().count(two.video_token_id) == 2 * 17
    state = two.prefill(Request("q?", video=_frames(2, seed=0)))
    assert state.length == two.build_prompt_ids("q?").numel()
    folder = two.save_pretrained(tmp_path)
    assert VideoLlavaTarget.from_pretrained(folder).num_frames == 2
    assert VideoLlavaTarget.from_pretrained(folder, num_frames=3).video_tokens == 3 * 17


def test_load_unknown_spec() -> None:
    with pytest.raises(ValueError, match="neither a preset .*tiny-random.* nor an existing folder"):
        VideoLlavaTarget.load("no-such-model")
    with pytest.raises(ValueError, match="unknown target preset 'huge'"):
        VideoLlavaTarget.from_preset("huge")


def test_preset_validation_says_what_to_fix() -> None:
    with pytest.raises(ValueError, match="image_size 30 must be a multiple of patch_size 8"):
        VisionShape(
            image_size=30, patch_size=8, hidden_size=32, num_layers=2, num_heads=4,
            intermediate_size=64,
        )
    with pytest.raises(ValueError, match="divisible by num_heads 5"):
        TextShape(
            hidden_size=64, num_layers=1, num_heads=5, num_kv_heads=5, intermediate_size=8,
            vocab_size=10, max_positions=8,
        )
    assert TARGET_PRESETS["7b"].video_tokens == 2056


# -- checkpoint errors ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "filename", ["config.json", "model.safetensors", "tokenizer.json", "preprocessor_config.json"]
)
def test_missing_file_is_named(saved: Path, tmp_path: Path, filename: str) -> None:
    folder = Path(shutil.copytree(saved, tmp_path / "ckpt"))
    (folder / filename).unlink()
    with pytest.raises(FileNotFoundError, match=filename.replace(".", r"\.")):
        VideoLlavaTarget.from_pretrained(folder)


def test_missing_shard_is_named(saved: Path, tmp_path: Path) -> None:
    folder = Path(shutil.copytree(saved, tmp_path / "ckpt"))
    weights = load_file(folder / "model.safetensors")
    names = sorted(weights)
    half = len(names) // 2
    shard_of = {k: f"model-0000{1 + (i >= half)}-of-00002.safetensors" for i, k in enumerate(names)}
    for shard in sorted(set(shard_of.values())):
        part = {k: weights[k] for k in names if shard_of[k] == shard}
        save_file(part, folder / shard, metadata={"format": "pt"})
    index = {"metadata": {}, "weight_map": shard_of}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    (folder / "model.safetensors").unlink()
    assert VideoLlavaTarget.from_pretrained(folder).num_frames == 4  # sharded layout loads
    (folder / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="model-00002-of-00002.safetensors"):
        VideoLlavaTarget.from_pretrained(folder)


def test_missing_weight_is_named(saved: Path, tmp_path: Path) -> None:
    folder = Path(shutil.copytree(saved, tmp_path / "ckpt"))
    weights = load_file(folder / "model.safetensors")
    key = next(k for k in weights if k.endswith("multi_modal_projector.linear_1.weight"))
    del weights[key]
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})
    match = r"missing weights: .*multi_modal_projector\.linear_1\.weight"
    with pytest.raises(ValueError, match=match):
        VideoLlavaTarget.from_pretrained(folder)


def test_mismatched_weight_is_named(saved: Path, tmp_path: Path) -> None:
    folder = Path(shutil.copytree(saved, tmp_path / "ckpt"))
    weights = load_file(folder / "model.safetensors")
    key = next(k for k in weights if k.endswith("multi_modal_projector.linear_1.weight"))
    weights[key] = torch.zeros(64, 16)
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})
    match = r"wrongly shaped weights: .*linear_1\.weight \(checkpoint \(64, 16\)"
    with pytest.raises(ValueError, match=match):
        VideoLlavaTarget.from_pretrained(folder)


def test_wrong_model_type_is_named(saved: Path, tmp_path: Path) -> None:
    folder = Path(shutil.copytree(saved, tmp_path / "ckpt"))
    cfg = json.loads((folder / "config.json").read_text())
    cfg["model_type"] = "llava"
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="model_type is 'llava', expected 'video_llava'"):
        VideoLlavaTarget.from_pretrained(folder)


def test_7b_standin_shares_the_eventgpt_vocabulary() -> None:
    """Drafted ids pass to the target unchanged: the 7B stand-ins agree on ids 0..31999."""
    eventgpt_presets = pytest.importorskip("evspec.models.presets.eventgpt")
    from evspec.models.presets.target import llama_standin_tokenizer
    from evspec.models.tokenizer import shared_vocab_size

    target_tok = llama_standin_tokenizer()
    assert len(target_tok) == 32003
    assert shared_vocab_size(eventgpt_presets.llama_standin_tokenizer(), target_tok) == 32000
