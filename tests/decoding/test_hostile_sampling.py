"""Careless sampling settings: a temperature or top-p that is not a finite number is refused
before any model loads, and sampling never draws the padded logits ids the tokenizer lacks
(the tiny Video-LLaVA has 320 logits for a 262-token tokenizer, like the 7B's 32064/32002)."""

from __future__ import annotations

import math

import pytest
from typer.testing import CliRunner

from evspec.cli import app
from evspec.decoding.drafters import make_drafter
from evspec.decoding.engine import generate
from evspec.decoding.sampling import token_limit
from evspec.models.request import Request
from evspec.models.target import VideoLlavaTarget
from evspec.loading import random_images


@pytest.fixture(scope="module")
def target() -> VideoLlavaTarget:
    return VideoLlavaTarget.from_preset("tiny-random", seed=0)


@pytest.fixture(scope="module")
def request_(target: VideoLlavaTarget) -> Request:
    video = random_images(target.num_frames, target.config.vision_config.image_size, seed=0)
    return Request("What happens in the video?", video=video)


@pytest.mark.parametrize("temperature, top_p", [(math.inf, 1.0), (math.nan, 1.0), (-1.0, 1.0),
                                                (1.0, math.nan), (1.0, 0.0), (1.0, math.inf)])
def test_non_finite_settings_are_refused(target, request_, temperature, top_p) -> None:
    with pytest.raises(ValueError, match="--temperature must be a finite|--top-p must be in"):
        generate(target, request_, None, max_new_tokens=4, temperature=temperature, top_p=top_p)


def test_cli_refuses_them_before_loading_models(monkeypatch) -> None:
    import evspec.loading as loading

    def no_loading(*args, **kwargs):
        raise AssertionError("a model loaded before the sampling settings were checked")

    monkeypatch.setattr(loading, "load_models", no_loading)
    res = CliRunner().invoke(app, ["generate", "-q", "hi", "--device", "cpu",
                                   "--temperature", "inf"])
    assert res.exit_code == 2 and "error: --temperature must be a finite number" in res.output


@pytest.mark.parametrize("drafter", ["none", "prompt-lookup"])
def test_sampling_never_emits_ids_beyond_the_tokenizer(target, request_, drafter) -> None:
    limit = token_limit(target)
    assert limit == len(target.tokenizer) == 262 < target.vocab_size
    d = make_drafter(drafter, target=target)
    # a huge temperature: near-uniform over the logits, 58 of the 320 of them padding
    res = generate(target, request_, d, gamma=3, max_new_tokens=48, temperature=1e6, seed=1,
                   stop_at_eos=False)
    assert len(res.tokens) == 48 and max(res.tokens) < limit, res.tokens


def test_a_tiny_temperature_samples_the_argmax(target, request_) -> None:
    greedy = generate(target, request_, None, max_new_tokens=12, stop_at_eos=False).tokens
    cold = generate(target, request_, None, max_new_tokens=12, temperature=1e-30, seed=3,
                    stop_at_eos=False).tokens
    assert cold == greedy
