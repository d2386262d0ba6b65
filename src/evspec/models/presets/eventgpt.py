"""Named EventGPT presets: shapes only, random weights.

``tiny-random``  CLIP of 32 px / patch 8 (16 patches + CLS = 17 tokens per image), 5 event
                 images (5 + 17 = 22 event tokens), a 2-layer LLaMA of width 64 with 4
                 heads, the feature adaptor on; the byte tokenizer of
                 :func:`evspec.models.tokenizer.byte_tokenizer` (259 ids, the same first
                 259 as the tiny target); the bare prompt.  For CPU tests.
``7b``           the release's shapes: CLIP ViT-L/14 at 336 px (1024 wide, 24 layers, 16
                 heads, MLP 4096; 577 tokens per image), LLaMA-7B (4096 wide, 32 layers,
                 32 heads, MLP 11008, vocab 32000, 4096 positions, context cap 2048), n = 5
                 (582 event tokens), the feature adaptor on, CLIP weights inside the model,
                 the release's prompt.
                 For timing at real scale: weights are random and the tokenizer is a
                 stand-in (:func:`llama_standin_tokenizer`), so its text is meaningless.

The tables are data; :meth:`EventGPTPreset.config` maps one to an
:class:`~evspec.models.eventgpt.EventGPTConfig`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from transformers import CLIPVisionConfig, LlamaConfig, PreTrainedTokenizerFast

from evspec.models.eventgpt import CONTEXT_CAP, EventGPTConfig
from evspec.models.tokenizer import llama_standin_tokenizer as _standin
from evspec.models.tokenizer import byte_tokenizer

__all__ = [
    "EVENTGPT_PRESETS",
    "ClipShape",
    "EventGPTPreset",
    "LlamaShape",
    "clip_l14_336",
    "get_preset",
    "llama_standin_tokenizer",
]

CLIP_L14_336_NAME = "openai/clip-vit-large-patch14-336"


@dataclass(frozen=True)
class ClipShape:
    """A CLIP vision tower: ``image_size`` / ``patch_size`` px, width, depth, heads, MLP."""

    image_size: int
    patch_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    intermediate_size: int


@dataclass(frozen=True)
class LlamaShape:
    """A LLaMA decoder; ``vocab_size`` is the logits width."""

    hidden_size: int
    num_layers: int
    num_heads: int
    intermediate_size: int
    vocab_size: int
    max_positions: int


@dataclass(frozen=True)
class EventGPTPreset:
    """One named EventGPT shape.

    ``prompt_style``: see :class:`EventGPTConfig` (``"release"`` for the 7B shapes, ``"bare"``
    for evspec's own small models); ``world``: see :class:`EventGPTConfig` (true for the
    world presets).

    ``tokenizer_kind``: ``"byte"`` (259 ids) or ``"llama-standin"`` (32000 ids, LLaMA's
    specials); :meth:`tokenizer` builds it.  Invalid shapes fail at definition, with the
    :class:`EventGPTConfig` message saying what to change.
    """

    name: str
    vision: ClipShape
    text: LlamaShape
    n_event_images: int
    tokenizer_kind: Literal["byte", "llama-standin"]
    event_feature_adaptor: bool = True
    rms_norm_eps: float = 1e-5
    max_context: int = CONTEXT_CAP
    initializer_range: float = 0.02
    prompt_style: str = "release"
    world: bool = False

    def __post_init__(self) -> None:
        if self.tokenizer_kind not in ("byte", "llama-standin"):
            raise ValueError(
                "EventGPTPreset.tokenizer_kind must be 'byte' or 'llama-standin', got "
                f"{self.tokenizer_kind!r}"
            )
        self.config()  # validates the shapes

    def config(self) -> EventGPTConfig:
        """The :class:`EventGPTConfig` of this preset (a fresh object per call)."""
        v, t = self.vision, self.text
        vision = CLIPVisionConfig(
            hidden_size=v.hidden_size,
            intermediate_size=v.intermediate_size,
            num_hidden_layers=v.num_layers,
            num_attention_heads=v.num_heads,
            image_size=v.image_size,
            patch_size=v.patch_size,
            projection_dim=768 if v.hidden_size == 1024 else v.hidden_size,  # unused by the tower
            hidden_act="quick_gelu",
            layer_norm_eps=1e-5,
            initializer_range=self.initializer_range,
        )
        llama = LlamaConfig(
            hidden_size=t.hidden_size,
            intermediate_size=t.intermediate_size,
            num_hidden_layers=t.num_layers,
            num_attention_heads=t.num_heads,
            num_key_value_heads=t.num_heads,
            vocab_size=t.vocab_size,
            max_position_embeddings=t.max_positions,
            rms_norm_eps=self.rms_norm_eps,
            rope_theta=10000.0,
            bos_token_id=1,
            eos_token_id=2,
            pad_token_id=None,
            initializer_range=self.initializer_range,
            tie_word_embeddings=False,
        )
        return EventGPTConfig(
            llama=llama,
            vision=vision,
            n_event_images=self.n_event_images,
            event_feature_adaptor=self.event_feature_adaptor,
            mm_use_im_start_end=False,
            mm_use_im_patch_token=False,
            mm_visual_tower=CLIP_L14_336_NAME if v.image_size == 336 else f"evspec/{self.name}-clip",
            max_context=min(self.max_context, t.max_positions),
            prompt_style=self.prompt_style,
            world=self.world,
        )

    def tokenizer(self) -> PreTrainedTokenizerFast:
        """The preset's tokenizer (shared, cached: copy it before adding tokens)."""
        return byte_tokenizer() if self.tokenizer_kind == "byte" else llama_standin_tokenizer()


EVENTGPT_PRESETS: dict[str, EventGPTPreset] = {
    "tiny-random": EventGPTPreset(
        name="tiny-random",
        vision=ClipShape(
            image_size=32, patch_size=8, hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64
        ),
        text=LlamaShape(
            hidden_size=64, num_layers=2, num_heads=4, intermediate_size=128, vocab_size=259,
            max_positions=2048,
        ),
        n_event_images=5,
        tokenizer_kind="byte",
        prompt_style="bare",
    ),
    "7b": EventGPTPreset(
        name="7b",
        vision=ClipShape(
            image_size=336, patch_size=14, hidden_size=1024, num_layers=24, num_heads=16,
            intermediate_size=4096,
        ),
        text=LlamaShape(
            hidden_size=4096, num_layers=32, num_heads=32, intermediate_size=11008, vocab_size=32000,
            max_positions=4096,
        ),
        n_event_images=5,
        tokenizer_kind="llama-standin",
    ),
}


def get_preset(name: str) -> EventGPTPreset:
    """The preset called ``name``; a clear error lists the known names."""
    try:
        return EVENTGPT_PRESETS[name]
    except KeyError:
        raise ValueError(
            f"unknown EventGPT preset {name!r}; choose one of {sorted(EVENTGPT_PRESETS)}"
        ) from None


def clip_l14_336() -> CLIPVisionConfig:
    """The vision config of ``openai/clip-vit-large-patch14-336`` (EventGPT's tower)."""
    return EVENTGPT_PRESETS["7b"].config().vision


# -- the 7B stand-in tokenizer -----------------------------------------------------------------


def llama_standin_tokenizer() -> PreTrainedTokenizerFast:
    """EventGPT-7B's 32000-id stand-in tokenizer (see :func:`evspec.models.tokenizer.llama_standin_tokenizer`);
    its ids agree with the Video-LLaVA-7B stand-in's first 32000."""
    return _standin()


# -- world presets (the synthetic world, WORLD.md) ---------------------------------------------
# Shape tables plus a function taking the world *drafter* tokenizer (its size is the logits
# width, as EventGPT-7B's 32000); not in ``EVENTGPT_PRESETS``, whose presets build their own
# tokenizers.

#: name -> (CLIP, LLaMA) shapes; ``LlamaShape.vocab_size`` is replaced by the tokenizer size.
#: ``world``: CLIP 64 px / patch 8 (65 tokens per event image; n = 5 -> 70 event tokens),
#: 96 wide, 4 layers; LLaMA 256 wide, 4 layers, 4 heads, MLP 512 (the same decoder size as
#: the world target, as EventGPT-7B and Video-LLaVA-7B share LLaMA-7B); 512 positions
#: (3.36 M parameters, 6.7 MB in fp16).
#: ``world-micro``: 16 px / patch 8 and a 64-wide 2-layer LLaMA, for CPU tests.
WORLD_EVENTGPT_SHAPES: dict[str, tuple[ClipShape, LlamaShape]] = {
    "world": (
        ClipShape(
            image_size=64, patch_size=8, hidden_size=96, num_layers=4, num_heads=4,
            intermediate_size=384,
        ),
        LlamaShape(
            hidden_size=256, num_layers=4, num_heads=4, intermediate_size=512, vocab_size=0,
            max_positions=512,
        ),
    ),
    "world-micro": (
        ClipShape(
            image_size=16, patch_size=8, hidden_size=32, num_layers=2, num_heads=2,
            intermediate_size=64,
        ),
        LlamaShape(
            hidden_size=64, num_layers=2, num_heads=2, intermediate_size=128, vocab_size=0,
            max_positions=512,
        ),
    ),
}


@dataclass(frozen=True)
class WorldEventGPTPreset(EventGPTPreset):
    """An EventGPT preset on the world tokenizer; build it with :func:`world_eventgpt_preset`."""

    tokenizer_kind: str = "world"  # type: ignore[assignment]
    prompt_style: str = "bare"  # the prompt the shipped world drafters were trained on
    world: bool = True  # declared in the checkpoint's config (EventGPTConfig.world)

    def __post_init__(self) -> None:
        if self.tokenizer_kind != "world":
            raise ValueError(
                f"WorldEventGPTPreset.tokenizer_kind must be 'world', got {self.tokenizer_kind!r}"
            )
        if self.text.vocab_size < 3:
            raise ValueError("WorldEventGPTPreset: vocab_size must come from the world tokenizer")
        self.config()  # validates the shapes

    def tokenizer(self) -> PreTrainedTokenizerFast:
        from evspec.data.world.tokenizer import build_world_tokenizers

        return build_world_tokenizers()[0]


def world_eventgpt_preset(
    name: str, tokenizer: PreTrainedTokenizerFast, *, n_event_images: int = 5
) -> WorldEventGPTPreset:
    """The world EventGPT preset ``name`` (a key of :data:`WORLD_EVENTGPT_SHAPES`) whose logits
    width is the size of ``tokenizer`` (the world *drafter* tokenizer)."""
    from dataclasses import replace

    if name not in WORLD_EVENTGPT_SHAPES:
        raise ValueError(
            f"unknown world EventGPT preset {name!r}; choose one of {sorted(WORLD_EVENTGPT_SHAPES)}"
        )
    if tokenizer.bos_token_id != 1 or tokenizer.eos_token_id != 2:
        raise ValueError(
            "world EventGPT preset: the tokenizer must have LLaMA's roles (<s> = 1, </s> = 2); "
            f"got bos {tokenizer.bos_token_id}, eos {tokenizer.eos_token_id}"
        )
    vision, text = WORLD_EVENTGPT_SHAPES[name]
    return WorldEventGPTPreset(
        name=name,
        vision=vision,
        text=replace(text, vocab_size=len(tokenizer)),
        n_event_images=n_event_images,
    )
