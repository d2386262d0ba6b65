"""EventGPT's configuration: :class:`EventGPTConfig` (shapes and switches, validated) and
the release's token conventions (the ``-200`` event placeholder id, the optional
``<ev_start>``/``<ev_end>``/``<ev_patch>`` tokens, the 2048-position context cap).

The network built from a config is in :mod:`evspec.models.eventgpt_modules`, the decoding
wrapper in :mod:`evspec.models.eventgpt`, the named shapes in
:mod:`evspec.models.presets.eventgpt`.
"""

from __future__ import annotations

from dataclasses import dataclass

from transformers import CLIPVisionConfig, LlamaConfig

EVENT_TOKEN_INDEX = -200  # the placeholder id replaced by the event embedding
EV_START, EV_END, EV_PATCH = "<ev_start>", "<ev_end>", "<ev_patch>"
CONTEXT_CAP = 2048  # the release truncates every sequence at 2048 positions
#: how the prompt shows the event: see :class:`EventGPTConfig`
PROMPT_STYLES = ("release", "bare")


@dataclass
class EventGPTConfig:
    """Shapes and switches of one EventGPT.

    ``llama``: the decoder (``vocab_size`` = logits width); ``vision``: the CLIP tower
    (``image_size``/``patch_size`` fix P = (S / patch)^2 + 1 tokens per image).
    ``n_event_images``: images per clip the model was trained on (5 officially; prefill
    accepts any n >= 1).  ``event_feature_adaptor``: build ``model.feature_adaptor``.
    ``mm_use_im_start_end``: wrap ``<event>`` in ``<ev_start> <ev_end>`` (tokens added to
    the tokenizer); ``mm_use_im_patch_token``: add ``<ev_patch>`` to the tokenizer.
    ``mm_visual_tower``: name or local path of the CLIP (weights come from there when the
    checkpoint lacks them).  ``max_context``: longest sequence (prompt + answer).
    ``prompt_style``: ``"release"`` writes the literal ``<ev_start><event><ev_end>\n`` before
    the question whatever ``mm_use_im_start_end`` says, as the release's prompt builder does
    (the tags are ordinary text unless the tokenizer holds them): what a real EventGPT
    checkpoint was trained on.  ``"bare"`` writes ``<event>\n`` (wrapped in the tags only
    when ``mm_use_im_start_end`` is set): the prompt evspec's own small models (the tiny
    preset, the synthetic world's drafters) were trained on.  ``world``: trained on
    evspec's synthetic world (WORLD.md), whose event images show the whole clip on the
    sensor-sized canvas; clips are rendered that way for it (``evspec.loading.ClipSizes``).
    """

    llama: LlamaConfig
    vision: CLIPVisionConfig
    n_event_images: int = 5
    event_feature_adaptor: bool = True
    mm_use_im_start_end: bool = False
    mm_use_im_patch_token: bool = False
    mm_visual_tower: str = "openai/clip-vit-large-patch14-336"
    max_context: int = CONTEXT_CAP
    prompt_style: str = "release"
    world: bool = False

    def __post_init__(self) -> None:
        if self.prompt_style not in PROMPT_STYLES:
            raise ValueError(
                f"EventGPTConfig.prompt_style must be one of {', '.join(PROMPT_STYLES)}, got "
                f"{self.prompt_style!r} ('release' for a real EventGPT checkpoint)"
            )
        if not isinstance(self.llama, LlamaConfig):
            raise TypeError(
                f"EventGPTConfig.llama must be a LlamaConfig, got {type(self.llama).__name__}"
            )
        if not isinstance(self.vision, CLIPVisionConfig):
            raise TypeError(
                f"EventGPTConfig.vision must be a CLIPVisionConfig, got {type(self.vision).__name__}"
            )
        if self.n_event_images < 1:
            raise ValueError(
                f"EventGPTConfig.n_event_images must be >= 1 (5 officially), got {self.n_event_images}"
            )
        size, patch = self.vision.image_size, self.vision.patch_size
        if patch < 1 or size % patch:
            raise ValueError(
                f"EventGPTConfig.vision.image_size {size} must be a positive multiple of "
                f"patch_size {patch}"
            )
        if self.llama.hidden_size % self.llama.num_attention_heads:
            raise ValueError(
                f"EventGPTConfig.llama.hidden_size {self.llama.hidden_size} must be divisible "
                f"by num_attention_heads {self.llama.num_attention_heads}"
            )
        limit = int(self.llama.max_position_embeddings)
        if not 2 <= self.max_context <= limit:
            raise ValueError(
                f"EventGPTConfig.max_context {self.max_context} must be in [2, "
                f"llama.max_position_embeddings = {limit}]; {CONTEXT_CAP} is the release's cap"
            )
        shortest = self.n_event_images + self.tokens_per_image + 1
        if shortest >= self.max_context:
            raise ValueError(
                f"EventGPTConfig: {self.n_event_images} images x {self.tokens_per_image} tokens "
                f"leave no room in max_context {self.max_context}; raise max_context or use "
                "fewer images"
            )

    @property
    def tokens_per_image(self) -> int:
        """P: patches plus CLS of one image (577 for CLIP-L/14 at 336 px)."""
        return (self.vision.image_size // self.vision.patch_size) ** 2 + 1

    @property
    def hidden_size(self) -> int:
        return int(self.llama.hidden_size)

    @property
    def image_size(self) -> int:
        return int(self.vision.image_size)
