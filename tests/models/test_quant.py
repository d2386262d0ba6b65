"""Optional 4-bit weights (evspec.models.quant): the install hint without bitsandbytes,
the fast-engine guard, which layers are replaced, and, on bitsandbytes' CPU backend, that
4-bit tiny models decode and speculative decoding stays lossless against them."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from torch import nn

from evspec.loading import ModelSpec, load_models
from evspec.decoding.drafters import make_drafter
from evspec.decoding.engine import generate
from evspec.models.eventgpt import EventGPT
from evspec.models.quant import KEEP_16BIT, is_4bit, quant_report, quantize_4bit
from evspec.models.request import Request
from evspec.models.target import VideoLlavaTarget

CPU = torch.device("cpu")


def _load(target: str | None = "tiny-random", draft: str | None = "tiny-random",
          quant: str = "4bit"):
    """The models through the one loader, on the CPU in float32."""
    spec = ModelSpec(target=target, draft_model=draft, device="cpu", dtype="float32", seed=0,
                     quant=quant)
    return load_models(spec)


def _request(n_event: int, event_size: int) -> Request:
    rng = np.random.default_rng(3)
    return Request(
        "What is moving?",
        video=rng.integers(0, 256, (4, 40, 48, 3), dtype=np.uint8),
        event_images=rng.integers(0, 256, (n_event, event_size, event_size, 3), dtype=np.uint8),
    )


def _bnb():
    return pytest.importorskip("bitsandbytes")


@pytest.fixture(scope="module")
def pair_4bit() -> tuple[VideoLlavaTarget, EventGPT]:
    """The tiny target and EventGPT, both loaded 4-bit through the one loader."""
    _bnb()
    loaded = _load()
    return loaded.target, loaded.draft


# -- without bitsandbytes, and bad settings ----------------------------------------------------


def test_missing_bitsandbytes_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # import now raises ImportError
    layer = nn.Sequential(nn.Linear(64, 64))
    with pytest.raises(ImportError, match=r"pip install 'evspec\[quant\]'"):
        quantize_4bit(layer, compute_dtype=torch.float32)
    assert type(layer[0]) is nn.Linear and not is_4bit(layer)

    def must_not_build(*args, **kwargs):
        raise AssertionError("a model was built before the missing bitsandbytes was reported")

    monkeypatch.setattr(VideoLlavaTarget, "load", must_not_build)
    monkeypatch.setattr(EventGPT, "load", must_not_build)
    with pytest.raises(ImportError, match=r"evspec\[quant\]"):
        _load(draft=None)
    with pytest.raises(ImportError, match=r"evspec\[quant\]"):
        _load(target=None)


def test_bad_quant_settings_are_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(VideoLlavaTarget, "load", lambda *a, **k: pytest.fail("built a model"))
    with pytest.raises(ValueError, match="quant '8bit' is not supported; choose one of none, 4bit"):
        _load(quant="8bit")
    _bnb()
    layer = nn.Sequential(nn.Linear(64, 64))
    with pytest.raises(ValueError, match="quant_type 'int4' is not supported; choose one of nf4, fp4"):
        quantize_4bit(layer, compute_dtype=torch.float32, quant_type="int4")
    with pytest.raises(ValueError, match="compute_dtype must be a floating torch dtype"):
        quantize_4bit(layer, compute_dtype=torch.int8)
    with pytest.raises(ValueError, match="no nn.Linear layer outside skip"):
        quantize_4bit(layer, compute_dtype=torch.float32, skip=("0",))
    with pytest.raises(ValueError, match="meta device"):
        quantize_4bit(nn.Sequential(nn.Linear(64, 64, device="meta")), compute_dtype=torch.float32)
    assert type(layer[0]) is nn.Linear


def test_backend_failure_is_a_clear_error_and_changes_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    bnb = _bnb()

    def unsupported(*args, **kwargs):
        raise NotImplementedError("no kernel for this device")

    monkeypatch.setattr(bnb.functional, "quantize_4bit", unsupported)
    layer = nn.Sequential(nn.Linear(64, 64))
    with pytest.raises(RuntimeError, match=r"cannot run 4-bit layers on the CPU .*--device cuda"):
        quantize_4bit(layer, compute_dtype=torch.float32)
    assert type(layer[0]) is nn.Linear and layer[0].weight.dtype == torch.float32


# -- what is replaced ----------------------------------------------------------------------------


def test_only_the_llama_decoder_is_quantized(pair_4bit: tuple[VideoLlavaTarget, EventGPT]) -> None:
    bnb = _bnb()
    target, eventgpt = pair_4bit
    for wrapper, decoder_prefix, n_layers in (
        (target, "model.language_model.layers.", target.config.text_config.num_hidden_layers),
        (eventgpt, "model.layers.", eventgpt.config.llama.num_hidden_layers),
    ):
        report = quant_report(wrapper.model)
        assert report.quant_type == "nf4" and report.compute_dtype == torch.float32
        # 7 linear layers per LLaMA block (q, k, v, o, gate, up, down), nothing else
        assert len(report.replaced) == 7 * n_layers
        assert all(name.startswith(decoder_prefix) for name in report.replaced)
        assert "lm_head" in report.kept
        assert all(isinstance(m, bnb.nn.Linear4bit) for m in wrapper.decoder.layers.modules()
                   if isinstance(m, nn.Linear))
        assert type(wrapper.decoder.embed_tokens) is nn.Embedding
        assert wrapper.decoder.embed_tokens.weight.dtype == torch.float32
        assert type(wrapper.lm_head) is nn.Linear and wrapper.dtype == torch.float32
        assert is_4bit(wrapper.decoder) and not is_4bit(wrapper.lm_head)
    kept_t = " ".join(quant_report(target.model).kept)
    assert "multi_modal_projector" in kept_t and "video_tower" in kept_t
    kept_e = " ".join(quant_report(eventgpt.model).kept)
    for part in ("visual_projector", "feature_adaptor", "visual_tower"):
        assert part in kept_e


def test_vision_towers_on_request_and_weights_are_the_same_weights() -> None:
    bnb = _bnb()
    full = VideoLlavaTarget.from_preset("tiny-random", seed=0)
    original = {n: m.weight.detach().clone() for n, m in full.model.named_modules()
                if type(m) is nn.Linear}
    before = quant_report(full.model).weight_bytes
    report = quantize_4bit(full.model, compute_dtype=torch.float32, skip=KEEP_16BIT)
    assert any(".video_tower." in n for n in report.replaced)
    assert not any("multi_modal_projector" in n or n == "lm_head" for n in report.replaced)
    assert report.weight_bytes < before
    for name in report.replaced:
        w = full.model.get_submodule(name).weight  # packed 4-bit
        assert w.dtype == torch.uint8 and w.bnb_quantized
        back = bnb.functional.dequantize_4bit(w.data, w.quant_state).float()  # [out, in]
        want = original[name]
        assert back.shape == want.shape
        # NF4 keeps each weight within its block's quantization step: the mean error is a
        # small fraction of the weights' scale, and the weights stay correlated ~1
        err = (back - want).abs().mean() / want.abs().mean()
        assert err < 0.2, (name, float(err))
        assert torch.corrcoef(torch.stack([back.flatten(), want.flatten()]))[0, 1] > 0.98
    with pytest.raises(ValueError, match="already in 4-bit"):
        quantize_4bit(full.model, compute_dtype=torch.float32)


# -- the engine on 4-bit models ------------------------------------------------------------------


def test_enable_fast_refuses_4bit(pair_4bit: tuple[VideoLlavaTarget, EventGPT]) -> None:
    target, eventgpt = pair_4bit
    for wrapper in (target, eventgpt):
        with pytest.raises(ValueError, match="fast engine .* needs 16-bit weights"):
            wrapper.enable_fast()
        assert wrapper.fast is None


def test_4bit_models_decode_and_sd_stays_lossless(pair_4bit: tuple[VideoLlavaTarget, EventGPT]) -> None:
    target, eventgpt = pair_4bit
    request = _request(eventgpt.n_event_images, 40)
    # prefill + score: the 4-bit decoder's scored logits equal a fresh prefill's
    state = target.prefill(request)
    tok = int(state.last_logits.argmax())
    scored = target.score(state, torch.tensor([tok])).logits  # [1, V]
    assert torch.isfinite(scored).all()
    target.rollback(state, 1)
    again = target.score(state, torch.tensor([tok])).logits
    torch.testing.assert_close(scored, again, atol=1e-4, rtol=0)

    n = 12
    base = generate(target, request, None, max_new_tokens=n, stop_at_eos=False)
    assert len(base.tokens) == n
    for gamma in (1, 3):
        own = generate(target, request, make_drafter("self", target=target), gamma=gamma,
                       max_new_tokens=n, stop_at_eos=False)
        assert own.tokens == base.tokens and own.stats.alpha == 1.0
        ev = generate(target, request, make_drafter("eventgpt", target=target, draft_model=eventgpt),
                      gamma=gamma, max_new_tokens=n, stop_at_eos=False)
        assert ev.tokens == base.tokens
        assert ev.stats.drafted > 0


def test_folder_loaded_checkpoint_quantizes_like_a_preset(tmp_path) -> None:
    _bnb()
    folder = VideoLlavaTarget.from_preset("tiny-random", seed=0).save_pretrained(tmp_path / "vl")
    preset = _load(draft=None).target
    loaded = _load(target=str(folder), draft=None).target
    assert quant_report(loaded.model).replaced == quant_report(preset.model).replaced
    request = _request(1, 8)
    a = generate(preset, request, None, max_new_tokens=6, stop_at_eos=False).tokens
    b = generate(loaded, request, None, max_new_tokens=6, stop_at_eos=False).tokens
    assert a == b  # same weights, same quantization: the same answer
