"""Named Video-LLaVA target presets: shapes only, random weights.

``tiny-random``  a CLIP of 32 px / patch 8 (16 patches + CLS = 17 tokens per frame) and a
                 2-layer LLaMA of width 64, on the byte tokenizer shared with the tiny
                 EventGPT (``evspec.models.tokenizer``); for CPU tests.
``7b``           the exact shapes of ``LanguageBind/Video-LLaVA-7B-hf``: LLaMA-7B
                 (4096 wide, 32 layers, 32 heads, MLP 11008, logits 32064, context 4096)
                 and CLIP-L/14 at 224 px (257 tokens per frame, CLS kept for video),
                 8 frames -> 2056 video tokens.  For timing at real scale: the weights are
                 random and the tokenizer is a stand-in, so its text is meaningless.

The tables are data; :meth:`TargetPreset.to_config` maps one to a transformers
``VideoLlavaConfig`` and :func:`preset_tokenizer` builds its tokenizer offline.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

from transformers import (
    CLIPVisionConfig,
    LlamaConfig,
    PreTrainedTokenizerFast,
    VideoLlavaConfig,
)

from evspec.models.tokenizer import llama_standin_tokenizer as _standin
from evspec.models.tokenizer import TARGET_EXTRA, byte_tokenizer

__all__ = [
    "TARGET_PRESETS",
    "TargetPreset",
    "TextShape",
    "VisionShape",
    "get_preset",
    "llama_standin_tokenizer",
    "preset_tokenizer",
]


@dataclass(frozen=True)
class VisionShape:
    """A CLIP vision tower (the video tower of Video-LLaVA)."""

    image_size: int
    patch_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    intermediate_size: int

    def __post_init__(self) -> None:
        if self.image_size % self.patch_size:
            raise ValueError(
                f"VisionShape.image_size {self.image_size} must be a multiple of "
                f"patch_size {self.patch_size}"
            )
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"VisionShape.hidden_size {self.hidden_size} must be divisible by "
                f"num_heads {self.num_heads}"
            )
        if self.num_layers < 2:
            raise ValueError(
                "VisionShape.num_layers must be >= 2: Video-LLaVA reads the penultimate "
                "layer (vision_feature_layer = -2)"
            )

    @property
    def tokens_per_frame(self) -> int:
        """Patches plus CLS (Video-LLaVA keeps CLS for video)."""
        return (self.image_size // self.patch_size) ** 2 + 1


@dataclass(frozen=True)
class TextShape:
    """A LLaMA decoder.  ``vocab_size`` is the logits width (padded past the tokenizer)."""

    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    intermediate_size: int
    vocab_size: int
    max_positions: int
    rms_norm_eps: float = 1e-5

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"TextShape.hidden_size {self.hidden_size} must be divisible by "
                f"num_heads {self.num_heads}"
            )
        if self.num_heads % self.num_kv_heads:
            raise ValueError(
                f"TextShape.num_heads {self.num_heads} must be a multiple of "
                f"num_kv_heads {self.num_kv_heads}"
            )
        if self.num_layers < 1 or self.max_positions < 2:
            raise ValueError("TextShape needs num_layers >= 1 and max_positions >= 2")


@dataclass(frozen=True)
class TargetPreset:
    """One named Video-LLaVA shape.

    ``tokenizer``: ``"byte"`` = :func:`evspec.models.tokenizer.byte_tokenizer` with
    ``<image> <video> <pad>`` appended (ids 259, 260, 261); ``"llama-standin"`` = a
    32003-entry vocabulary with LLaMA's special ids and byte-fallback ids (byte b -> 3 + b)
    for text, ``<image>`` 32000, ``<video>`` 32001, ``<pad>`` 32002 (see
    :func:`preset_tokenizer`).
    """

    name: str
    vision: VisionShape
    text: TextShape
    num_frames: int
    image_token_id: int
    video_token_id: int
    pad_token_id: int
    tokenizer: Literal["byte", "llama-standin"]
    bos_token_id: int = 1
    eos_token_id: int = 2
    initializer_range: float = 0.02

    def __post_init__(self) -> None:
        if self.num_frames < 1:
            raise ValueError(f"TargetPreset.num_frames must be >= 1, got {self.num_frames}")
        ids = ("image_token_id", "video_token_id", "pad_token_id", "bos_token_id", "eos_token_id")
        for field in ids:
            value = getattr(self, field)
            if not 0 <= value < self.text.vocab_size:
                raise ValueError(
                    f"TargetPreset {self.name!r}: {field} = {value} is outside the logits "
                    f"width {self.text.vocab_size}; raise TextShape.vocab_size"
                )
        if self.tokenizer not in ("byte", "llama-standin"):
            raise ValueError(
                f"TargetPreset.tokenizer must be 'byte' or 'llama-standin', got {self.tokenizer!r}"
            )

    @property
    def tokens_per_frame(self) -> int:
        return self.vision.tokens_per_frame

    @property
    def video_tokens(self) -> int:
        """Video positions in the expanded prompt (``num_frames * tokens_per_frame``)."""
        return self.num_frames * self.tokens_per_frame

    def with_frames(self, num_frames: int) -> TargetPreset:
        """The same preset taking ``num_frames`` frames per video."""
        return replace(self, num_frames=num_frames)

    def to_config(self) -> VideoLlavaConfig:
        """The transformers config.  ``video_seq_length`` stores the frame count, so a
        saved checkpoint remembers it (``num_frames = video_seq_length / tokens_per_frame``)."""
        v, t = self.vision, self.text
        vision = CLIPVisionConfig(
            hidden_size=v.hidden_size,
            intermediate_size=v.intermediate_size,
            num_hidden_layers=v.num_layers,
            num_attention_heads=v.num_heads,
            image_size=v.image_size,
            patch_size=v.patch_size,
            projection_dim=v.hidden_size,
            initializer_range=self.initializer_range,
        )
        text = LlamaConfig(
            hidden_size=t.hidden_size,
            intermediate_size=t.intermediate_size,
            num_hidden_layers=t.num_layers,
            num_attention_heads=t.num_heads,
            num_key_value_heads=t.num_kv_heads,
            vocab_size=t.vocab_size,
            max_position_embeddings=t.max_positions,
            rms_norm_eps=t.rms_norm_eps,
            bos_token_id=self.bos_token_id,
            eos_token_id=self.eos_token_id,
            pad_token_id=self.pad_token_id,
            initializer_range=self.initializer_range,
            tie_word_embeddings=False,
        )
        return VideoLlavaConfig(
            vision_config=vision,
            text_config=text,
            image_token_index=self.image_token_id,
            video_token_index=self.video_token_id,
            vision_feature_layer=-2,
            vision_feature_select_strategy="default",
            image_seq_length=self.tokens_per_frame - 1,
            video_seq_length=self.video_tokens,
            projector_hidden_act="gelu",
        )


TARGET_PRESETS: dict[str, TargetPreset] = {
    "tiny-random": TargetPreset(
        name="tiny-random",
        vision=VisionShape(
            image_size=32,
            patch_size=8,
            hidden_size=32,
            num_layers=2,
            num_heads=4,
            intermediate_size=64,
        ),
        text=TextShape(
            hidden_size=64,
            num_layers=2,
            num_heads=4,
            num_kv_heads=4,
            intermediate_size=128,
            vocab_size=320,  # 262 tokenizer ids, padded like the real 32003 -> 32064
            max_positions=512,
        ),
        num_frames=4,
        image_token_id=259,
        video_token_id=260,
        pad_token_id=261,
        tokenizer="byte",
    ),
    "7b": TargetPreset(
        name="7b",
        vision=VisionShape(
            image_size=224,
            patch_size=14,
            hidden_size=1024,
            num_layers=24,
            num_heads=16,
            intermediate_size=4096,
        ),
        text=TextShape(
            hidden_size=4096,
            num_layers=32,
            num_heads=32,
            num_kv_heads=32,
            intermediate_size=11008,
            vocab_size=32064,
            max_positions=4096,
        ),
        num_frames=8,
        image_token_id=32000,
        video_token_id=32001,
        pad_token_id=32002,
        tokenizer="llama-standin",
    ),
}


def get_preset(name: str) -> TargetPreset:
    """The preset called ``name``; a clear error lists the known names."""
    try:
        return TARGET_PRESETS[name]
    except KeyError:
        raise ValueError(
            f"unknown target preset {name!r}; choose one of {sorted(TARGET_PRESETS)}"
        ) from None


# -- tokenizers ------------------------------------------------------------------------


def llama_standin_tokenizer() -> PreTrainedTokenizerFast:
    """Video-LLaVA-7B's stand-in tokenizer: the shared 32000-id LLaMA stand-in plus
    ``<image>`` 32000, ``<video>`` 32001, ``<pad>`` 32002 (see
    :func:`evspec.models.tokenizer.llama_standin_tokenizer`)."""
    return _standin(TARGET_EXTRA)


def preset_tokenizer(preset: TargetPreset) -> PreTrainedTokenizerFast:
    """The tokenizer a preset uses, checked against the preset's special ids."""
    tok = byte_tokenizer(TARGET_EXTRA) if preset.tokenizer == "byte" else llama_standin_tokenizer()
    got = tok.convert_tokens_to_ids(list(TARGET_EXTRA))
    want = [preset.image_token_id, preset.video_token_id, preset.pad_token_id]
    roles = (tok.bos_token_id, tok.eos_token_id)
    if got != want or roles != (preset.bos_token_id, preset.eos_token_id):
        raise ValueError(
            f"preset {preset.name!r}: tokenizer ids {dict(zip(TARGET_EXTRA, got))} / bos "
            f"{tok.bos_token_id} / eos {tok.eos_token_id} differ from the preset's "
            f"{dict(zip(TARGET_EXTRA, want))} / {preset.bos_token_id} / {preset.eos_token_id}"
        )
    return tok


# -- world presets (the synthetic world, WORLD.md) ------------------------------------------
# The world models use the world tokenizer (``evspec.data.world.tokenizer``), whose special
# ids are only known once it is built, so these are shape tables plus a function that takes
# the tokenizer; they are not in ``TARGET_PRESETS`` (``from_preset`` builds preset
# tokenizers itself).  Logits are padded past the tokenizer, like the real 32003 -> 32064.

#: name -> (vision tower, LLaMA) shapes.  ``world``: CLIP 64 px / patch 8 (64 patches + CLS
#: = 65 tokens per frame, 8 frames -> 520 video tokens), 96 wide, 4 layers; LLaMA 256 wide,
#: 4 layers, 4 heads x 64, MLP 512, logits 256, 1024 positions (3.79 M parameters, VideoLlava's
#: unused image tower included: 7.6 MB in fp16).  ``world-micro``: 16 px / patch 8 (5 tokens per frame) and a 64-wide
#: 2-layer LLaMA, for CPU tests of the training code.
WORLD_TARGET_SHAPES: dict[str, tuple[VisionShape, TextShape]] = {
    "world": (
        VisionShape(
            image_size=64, patch_size=8, hidden_size=96, num_layers=4, num_heads=4,
            intermediate_size=384,
        ),
        TextShape(
            hidden_size=256, num_layers=4, num_heads=4, num_kv_heads=4, intermediate_size=512,
            vocab_size=256, max_positions=1024,
        ),
    ),
    "world-micro": (
        VisionShape(
            image_size=16, patch_size=8, hidden_size=32, num_layers=2, num_heads=2,
            intermediate_size=64,
        ),
        TextShape(
            hidden_size=64, num_layers=2, num_heads=2, num_kv_heads=2, intermediate_size=128,
            vocab_size=256, max_positions=512,
        ),
    ),
}


@dataclass(frozen=True)
class WorldTargetPreset(TargetPreset):
    """A target preset on the world tokenizer (``tokenizer = "world"``); build it with
    :func:`world_target_preset`, which reads the special ids from the tokenizer."""

    tokenizer: str = "world"  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.num_frames < 1:
            raise ValueError(f"WorldTargetPreset.num_frames must be >= 1, got {self.num_frames}")
        ids = ("image_token_id", "video_token_id", "pad_token_id", "bos_token_id", "eos_token_id")
        for name in ids:
            value = getattr(self, name)
            if not 0 <= value < self.text.vocab_size:
                raise ValueError(
                    f"WorldTargetPreset {self.name!r}: {name} = {value} is outside the logits "
                    f"width {self.text.vocab_size}; raise TextShape.vocab_size"
                )
        if self.tokenizer != "world":
            raise ValueError(f"WorldTargetPreset.tokenizer must be 'world', got {self.tokenizer!r}")


def world_target_preset(
    name: str, tokenizer: PreTrainedTokenizerFast, *, num_frames: int = 8
) -> WorldTargetPreset:
    """The world target preset ``name`` (a key of :data:`WORLD_TARGET_SHAPES`) for the world
    *target* tokenizer (the shared vocabulary + ``<image> <video> <pad>``)."""
    if name not in WORLD_TARGET_SHAPES:
        raise ValueError(
            f"unknown world target preset {name!r}; choose one of {sorted(WORLD_TARGET_SHAPES)}"
        )
    vision, text = WORLD_TARGET_SHAPES[name]
    if len(tokenizer) > text.vocab_size:
        raise ValueError(
            f"world target preset {name!r}: the tokenizer has {len(tokenizer)} ids but the "
            f"logits are {text.vocab_size} wide; raise vocab_size in WORLD_TARGET_SHAPES"
        )
    unk = tokenizer.unk_token_id
    image, video, pad = tokenizer.convert_tokens_to_ids(list(TARGET_EXTRA))
    if unk in (image, video, pad) or tokenizer.pad_token_id != pad:
        raise ValueError(
            f"world target preset {name!r}: the tokenizer lacks {TARGET_EXTRA} (use the world "
            "*target* tokenizer, not the drafter's)"
        )
    return WorldTargetPreset(
        name=name,
        vision=vision,
        text=text,
        num_frames=num_frames,
        image_token_id=image,
        video_token_id=video,
        pad_token_id=pad,
        bos_token_id=int(tokenizer.bos_token_id),
        eos_token_id=int(tokenizer.eos_token_id),
    )
