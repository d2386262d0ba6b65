"""EventGPT, our implementation: the event-camera drafter (MODELS.md, "EventGPT").

The network, as the official inference code composes it::

    n event images [n, 3, S, S]
      -> CLIP vision tower, final layer incl. CLS           [n, P, Dv]  (P = 577 at 336/14)
      -> visual_projector  Linear(Dv, H) . GELU . Linear(H, H)   [n, P, H]
      -> feature_adaptor   Linear(H, H), applied ONCE (when configured)
      -> spatio-temporal pooling: temporal = mean over P -> [n, H],
                                  spatial  = mean over n -> [P, H]
      -> event embedding [temporal; spatial]                [n + P, H]  (582 for n = 5)
    prompt ids with one -200 placeholder  ->  text embeddings with the event embedding
    spliced in  ->  LLaMA decoder  ->  logits

Module names equal the official checkpoint's weight names (``model.embed_tokens``,
``model.layers.i``, ``model.norm``, ``lm_head``, ``model.visual_projector.{0,2}``,
``model.feature_adaptor``, ``model.visual_tower.visual_tower.vision_model``), so a release
``state_dict`` loads without renaming.  :class:`EventGPT` wraps the network for decoding
(prefill / score / rollback from :class:`~evspec.models.causal_lm.CausalLMWrapper`), so it
can serve as a drafter or, in tests, as a target.  The checkpoint loader lives in
:mod:`evspec.models.eventgpt_loader`, the named shapes in
:mod:`evspec.models.presets.eventgpt`.
"""

from __future__ import annotations

from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from torch import nn
from transformers import (
    CLIPImageProcessorPil,
    CLIPVisionConfig,
    CLIPVisionModel,
    LlamaConfig,
    LlamaModel,
    PreTrainedTokenizerBase,
)
from transformers.initialization import no_init_weights

from evspec.models.causal_lm import CausalLMWrapper, timed
from evspec.models.fast.prefix_cache import PrefixKey, media_fingerprint
from evspec.models.request import Request
from evspec.models.state import TargetState

EVENT_TOKEN_INDEX = -200  # the placeholder id replaced by the event embedding
EVENT_PLACEHOLDER = "<event>"
EV_START, EV_END, EV_PATCH = "<ev_start>", "<ev_end>", "<ev_patch>"
SYSTEM_PROMPT = (
    "A chat between a curious human and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the human's questions."
)
CONTEXT_CAP = 2048  # the release truncates every sequence at 2048 positions


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
    """

    llama: LlamaConfig
    vision: CLIPVisionConfig
    n_event_images: int = 5
    event_feature_adaptor: bool = True
    mm_use_im_start_end: bool = False
    mm_use_im_patch_token: bool = False
    mm_visual_tower: str = "openai/clip-vit-large-patch14-336"
    max_context: int = CONTEXT_CAP

    def __post_init__(self) -> None:
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


# -- the network -------------------------------------------------------------------------


class EventVisualTower(nn.Module):
    """``model.visual_tower``: CLIP's final ``last_hidden_state`` including CLS."""

    def __init__(self, vision: CLIPVisionConfig) -> None:
        super().__init__()
        self.visual_tower = nn.Module()  # a bare level: the release's names nest it twice
        self.visual_tower.vision_model = CLIPVisionModel(vision)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """``[n, 3, S, S]`` -> ``[n, P, Dv]`` (no post-layernorm: it only feeds CLIP's pooler)."""
        return self.visual_tower.vision_model(pixel_values=pixel_values).last_hidden_state


class EventGPTModel(nn.Module):
    """The EventGPT network; ``state_dict`` names are the official release's."""

    def __init__(self, config: EventGPTConfig) -> None:
        super().__init__()
        self.config = config
        hidden, vision_hidden = config.hidden_size, int(config.vision.hidden_size)
        std = float(config.llama.initializer_range)
        self.model = LlamaModel(config.llama)  # embed_tokens, layers, norm, rotary_emb
        # The multimodal parts hang off ``model`` as in the release (EventChatLlamaModel).
        self.model.visual_tower = EventVisualTower(config.vision)
        self.model.visual_projector = nn.Sequential(
            nn.Linear(vision_hidden, hidden), nn.GELU(), nn.Linear(hidden, hidden)
        )
        self.model.feature_adaptor = nn.Linear(hidden, hidden) if config.event_feature_adaptor else None
        self.lm_head = nn.Linear(hidden, int(config.llama.vocab_size), bias=False)
        # LLaMA-style init for the parts LlamaModel does not own (no-ops under no_init_weights).
        linears = [self.lm_head, self.model.visual_projector[0], self.model.visual_projector[2]]
        if self.model.feature_adaptor is not None:
            linears.append(self.model.feature_adaptor)
        for layer in linears:
            nn.init.normal_(layer.weight, mean=0.0, std=std)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)

    def encode_events(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """``[n, 3, S, S]`` CLIP-normalised images -> event embedding ``[n + P, H]``."""
        if pixel_values.ndim != 4 or pixel_values.shape[1] != 3:
            raise ValueError(f"pixel_values must be [n, 3, S, S]; got {tuple(pixel_values.shape)}")
        size = self.config.image_size
        if tuple(pixel_values.shape[2:]) != (size, size):
            raise ValueError(
                f"pixel_values are {tuple(pixel_values.shape[2:])} px; this tower takes "
                f"({size}, {size}) (preprocess with EventGPT.preprocess)"
            )
        weight = self.lm_head.weight
        feats = self.model.visual_tower(pixel_values.to(weight.device, weight.dtype))  # [n, P, Dv]
        feats = self.model.visual_projector(feats)  # [n, P, H]
        if self.model.feature_adaptor is not None:
            feats = self.model.feature_adaptor(feats)  # [n, P, H], once
        temporal = feats.mean(dim=1)  # [n, H]: one token per image
        spatial = feats.mean(dim=0)  # [P, H]: one token per position
        return torch.cat([temporal, spatial], dim=0)  # [n + P, H]

    def embed_prompt(self, input_ids: torch.Tensor, event_embeds: torch.Tensor) -> torch.Tensor:
        """``input_ids`` ``[L]`` with exactly one -200 and ``event_embeds`` ``[E, H]`` ->
        ``[L - 1 + E, H]`` (text embeddings with the event embedding spliced in)."""
        if input_ids.ndim != 1:
            raise ValueError(f"input_ids must be 1-D [L]; got {tuple(input_ids.shape)}")
        at = (input_ids == EVENT_TOKEN_INDEX).nonzero().flatten().tolist()
        if len(at) != 1:
            raise ValueError(
                f"input_ids hold {len(at)} event placeholders ({EVENT_TOKEN_INDEX}); "
                "EventGPT prompts take exactly one"
            )
        if event_embeds.ndim != 2 or event_embeds.shape[1] != self.config.hidden_size:
            raise ValueError(
                f"event_embeds must be [E, {self.config.hidden_size}]; got {tuple(event_embeds.shape)}"
            )
        pos = at[0]
        ids = input_ids.to(self.lm_head.weight.device)
        text = self.model.embed_tokens(torch.cat([ids[:pos], ids[pos + 1 :]]))  # [L - 1, H]
        return torch.cat([text[:pos], event_embeds.to(text.dtype), text[pos:]], dim=0)

    def forward(self, input_ids: torch.Tensor, pixel_values: torch.Tensor) -> torch.Tensor:
        """One prompt, no cache: ``[L]`` ids (one -200) + ``[n, 3, S, S]`` -> logits
        ``[L - 1 + n + P, V]``."""
        embeds = self.embed_prompt(input_ids, self.encode_events(pixel_values))  # [T, H]
        hidden = self.model(inputs_embeds=embeds[None]).last_hidden_state[0]  # [T, H]
        return self.lm_head(hidden)


@contextmanager
def _building(dtype: torch.dtype, device: torch.device, seed: int | None) -> Iterator[None]:
    """Create parameters directly on ``device`` in ``dtype``; seeded init when ``seed`` is
    given, no init at all (weights to be loaded) when it is None.  The default dtype and
    the RNG are restored afterwards."""
    if not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating-point torch dtype, got {dtype}")
    previous = torch.get_default_dtype()
    if seed is None or device.type == "meta":
        init = no_init_weights() if seed is None else nullcontext()
        rng = nullcontext()
    else:
        init = nullcontext()
        rng = torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else [])
    torch.set_default_dtype(dtype)
    try:
        with rng, init, torch.device(device):
            if seed is not None and device.type != "meta":
                torch.random.default_generator.manual_seed(seed)
                if device.type == "cuda":
                    with torch.cuda.device(device):
                        torch.cuda.manual_seed(seed)
            yield
    finally:
        torch.set_default_dtype(previous)


def build_model(
    config: EventGPTConfig,
    *,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    seed: int | None = 0,
) -> EventGPTModel:
    """An :class:`EventGPTModel` built on ``device`` in ``dtype`` (``"meta"`` = shapes only).

    ``seed``: random init from that seed; ``None``: uninitialised memory, for loaders that
    overwrite every weight.
    """
    device = torch.device(device)
    with _building(dtype, device, seed):
        model = EventGPTModel(config)
    return model.eval()  # training code calls .train(); decoding runs under inference_mode


def make_image_processor(size: int) -> CLIPImageProcessorPil:
    """CLIP preprocessing for event images: resize shortest side to ``size`` (bicubic),
    centre crop ``size``, CLIP mean/std.  The PIL backend: no torchvision, identical on
    every machine."""
    return CLIPImageProcessorPil(
        size={"shortest_edge": size},
        crop_size={"height": size, "width": size},
        do_resize=True,
        do_center_crop=True,
        do_rescale=True,
        do_normalize=True,
        do_convert_rgb=True,
    )


# -- the decoding wrapper ------------------------------------------------------------------


class EventGPT(CausalLMWrapper):
    """EventGPT for speculative decoding (satisfies the ``Target`` protocol).

    Attributes: ``model`` (:class:`EventGPTModel`), ``tokenizer``, ``image_processor``,
    ``config`` (:class:`EventGPTConfig`), ``n_event_images``; from the base class
    ``decoder`` (the LlamaModel), ``lm_head``, ``eos_token_id``, ``max_context``,
    ``vocab_size`` (logits width).
    """

    def __init__(
        self,
        model: EventGPTModel,
        tokenizer: PreTrainedTokenizerBase,
        image_processor: CLIPImageProcessorPil | None = None,
    ) -> None:
        self.model = model.eval()
        self.config = model.config
        self.tokenizer = tokenizer
        self.image_processor = image_processor or make_image_processor(self.config.image_size)
        self.n_event_images = self.config.n_event_images
        self.decoder = model.model
        self.lm_head = model.lm_head
        self.vocab_size = int(model.lm_head.weight.shape[0])
        self.max_context = int(self.config.max_context)
        llama = self.config.llama
        bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else llama.bos_token_id
        eos = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else llama.eos_token_id
        if bos is None or eos is None:
            raise ValueError(
                "EventGPT needs BOS and EOS ids (tokenizer or config.json bos/eos_token_id)"
            )
        self.bos_token_id = int(bos)
        self.eos_token_id = int(eos[0] if isinstance(eos, list) else eos)
        if self.config.mm_use_im_start_end:
            unk = tokenizer.unk_token_id
            for tok in (EV_START, EV_END):
                tid = tokenizer.convert_tokens_to_ids(tok)
                if tid is None or tid == unk or tid >= self.vocab_size:
                    raise ValueError(
                        f"mm_use_im_start_end is set but the tokenizer has no usable {tok!r} "
                        f"(id {tid}, logits width {self.vocab_size}); load through "
                        "EventGPT.from_pretrained, which adds it"
                    )

    # -- construction (logic in eventgpt_loader / presets) ------------------------------
    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        *,
        dtype: torch.dtype = torch.float32,
        device: str | torch.device = "cpu",
        clip_path: str | Path | None = None,
    ) -> EventGPT:
        """Load the official release layout (see :func:`eventgpt_loader.load_eventgpt`)."""
        from evspec.models.eventgpt_loader import load_eventgpt

        model, tokenizer = load_eventgpt(path, dtype=dtype, device=device, clip_path=clip_path)
        return cls(model, tokenizer)

    @classmethod
    def from_preset(
        cls,
        name: str,
        *,
        dtype: torch.dtype = torch.float32,
        device: str | torch.device = "cpu",
        seed: int = 0,
    ) -> EventGPT:
        """Random weights in a preset's shapes (``tiny-random``, ``7b``), built directly on
        ``device`` in ``dtype``, seeded; ``device="meta"`` builds shapes only."""
        from evspec.models.presets.eventgpt import get_preset

        preset = get_preset(name)
        model = build_model(preset.config(), dtype=dtype, device=device, seed=seed)
        return cls(model, preset.tokenizer())

    @classmethod
    def load(
        cls,
        spec: str | Path,
        *,
        dtype: torch.dtype = torch.float32,
        device: str | torch.device = "cpu",
        seed: int = 0,
        clip_path: str | Path | None = None,
    ) -> EventGPT:
        """``spec`` = a preset name (``seed`` applies) or a local release folder
        (``clip_path`` applies)."""
        from evspec.models.presets.eventgpt import EVENTGPT_PRESETS

        if str(spec) in EVENTGPT_PRESETS:
            return cls.from_preset(str(spec), dtype=dtype, device=device, seed=seed)
        if Path(spec).is_dir():
            return cls.from_pretrained(spec, dtype=dtype, device=device, clip_path=clip_path)
        raise ValueError(
            f"EventGPT {str(spec)!r} is neither a preset ({', '.join(sorted(EVENTGPT_PRESETS))}) "
            "nor an existing folder; pass the folder of the EventGPT-7b release"
        )

    def save_pretrained(self, path: str | Path, *, include_vision: bool = True) -> Path:
        """Write the official release layout (see :func:`eventgpt_loader.save_eventgpt`)."""
        from evspec.models.eventgpt_loader import save_eventgpt

        return save_eventgpt(self.model, self.tokenizer, path, include_vision=include_vision)

    # -- prompt and pixels ---------------------------------------------------------------
    def prompt_text(self, question: str) -> str:
        """The ``eventgpt_v1`` prompt (Vicuna v1 style) with the ``<event>`` placeholder."""
        if EVENT_PLACEHOLDER in question:
            raise ValueError(f"the question must not contain the reserved {EVENT_PLACEHOLDER!r}")
        event = EVENT_PLACEHOLDER
        if self.config.mm_use_im_start_end:
            event = f"{EV_START}{EVENT_PLACEHOLDER}{EV_END}"
        return f"{SYSTEM_PROMPT} USER: {event}\n{question} ASSISTANT:"

    def _encode_chunk(self, text: str) -> list[int]:
        ids = list(self.tokenizer(text)["input_ids"])
        return ids[1:] if ids and ids[0] == self.bos_token_id else ids

    def build_prompt_ids(self, question: str) -> torch.Tensor:
        """``[L]`` int64: BOS, the text before ``<event>``, -200, the text after.  Each
        chunk is tokenised separately, as the release's ``tokenizer_event_token`` does."""
        before, after = self.prompt_text(question).split(EVENT_PLACEHOLDER)
        ids = [self.bos_token_id, *self._encode_chunk(before), EVENT_TOKEN_INDEX]
        ids += self._encode_chunk(after)
        return torch.tensor(ids, dtype=torch.long)

    def preprocess(self, event_images: np.ndarray | None) -> torch.Tensor:
        """``[n, H, W, 3]`` uint8 event images -> ``[n, 3, S, S]`` pixels on the model's
        device and dtype."""
        if event_images is None:
            raise ValueError("EventGPT needs Request.event_images ([n, H, W, 3] uint8); got None")
        if event_images.ndim != 4 or event_images.shape[-1] != 3 or event_images.dtype != np.uint8:
            raise ValueError(
                "Request.event_images must be uint8 [n, H, W, 3]; got "
                f"{event_images.dtype} {tuple(event_images.shape)}"
            )
        out = self.image_processor.preprocess(
            list(event_images), return_tensors="pt", input_data_format="channels_last"
        )
        pixels = out["pixel_values"]  # [n, 3, S, S] float32
        size = self.config.image_size
        if tuple(pixels.shape[1:]) != (3, size, size):
            raise ValueError(
                f"preprocessed event images are {tuple(pixels.shape[1:])}; the tower takes "
                f"(3, {size}, {size}): fix the image processor's size/crop_size"
            )
        return pixels.to(self.device, self.dtype)

    def prompt_length(self, prompt_ids: torch.Tensor, n_images: int) -> int:
        """Positions of the expanded prompt: ``L - 1 + n + P``."""
        return int(prompt_ids.numel()) - 1 + n_images + self.config.tokens_per_image

    # -- the Target protocol -------------------------------------------------------------
    def prefill(self, request: Request, *, return_hidden: bool = False) -> TargetState:
        """Encode the event images, splice them into the prompt, fill the KV cache.

        Fails before any model work when the prompt does not fit ``max_context``.
        ``timings``: ``preprocess_ms`` (CPU image preprocessing), ``vision_ms`` (tower,
        projector, adaptor, pooling, splice), ``prefill_ms`` (decoder pass).
        ``extra``: ``event_embeds`` ``[n + P, H]`` and ``event_span`` ``(start, end)``, the
        event positions in the prompt.  ``prompt_ids`` holds -200 at those positions.
        With the prefix cache on and a ``clip_id``, see :meth:`_prefill_clip`.
        """
        if request.event_images is None:
            raise ValueError("EventGPT needs Request.event_images ([n, H, W, 3] uint8); got None")
        prompt_ids = self.build_prompt_ids(request.question)  # [L]
        n = int(request.event_images.shape[0])
        length = self.prompt_length(prompt_ids, n)
        if length >= self.max_context:
            raise ValueError(
                f"prompt of {length} tokens ({n + self.config.tokens_per_image} of them event "
                f"tokens) does not fit EventGPT's context of {self.max_context}; shorten the "
                "question or use fewer event images"
            )
        timings: dict[str, float] = {}
        if self.prefix_cache is not None and request.clip_id is not None:
            return self._prefill_clip(request, prompt_ids, return_hidden=return_hidden, timings=timings)
        with timed(self.device, timings, "preprocess_ms"):
            pixels = self.preprocess(request.event_images)  # [n, 3, S, S]
        with timed(self.device, timings, "vision_ms"), torch.inference_mode():
            event_embeds = self.model.encode_events(pixels)  # [n + P, H]
            embeds = self.model.embed_prompt(prompt_ids, event_embeds)  # [L - 1 + n + P, H]
        start = int((prompt_ids == EVENT_TOKEN_INDEX).nonzero()[0, 0])
        span = (start, start + int(event_embeds.shape[0]))
        fill = torch.full((span[1] - span[0],), EVENT_TOKEN_INDEX)
        expanded = torch.cat([prompt_ids[:start], fill, prompt_ids[start + 1 :]])  # [L - 1 + n + P]
        state = self._prefill_embeds(embeds, expanded, return_hidden=return_hidden, timings=timings)
        state.extra.update(event_embeds=event_embeds, event_span=span)
        return state

    def _prefill_clip(
        self,
        request: Request,
        prompt_ids: torch.Tensor,  # [L] with one -200
        *,
        return_hidden: bool,
        timings: dict[str, float],
    ) -> TargetState:
        """Prefill through the per-clip prefix cache.

        Prefix = BOS, system text, ``USER: `` (and ``<ev_start>``), the ``n + P`` event
        embeddings; suffix = the ids after the placeholder (``\n{question} ASSISTANT:``,
        with ``<ev_end>`` first when configured), split from the very ids
        :meth:`build_prompt_ids` produced, so the tokenisation is the uncached one.  On a
        hit the event images are neither preprocessed nor encoded and only the suffix is
        prefilled (``timings['prefix_hit']``).  ``extra`` as in :meth:`prefill`.
        """
        assert request.event_images is not None
        start = int((prompt_ids == EVENT_TOKEN_INDEX).nonzero()[0, 0])
        n_event = int(request.event_images.shape[0]) + self.config.tokens_per_image
        span = (start, start + n_event)
        fill = torch.full((n_event,), EVENT_TOKEN_INDEX)
        expanded = torch.cat([prompt_ids[:start], fill, prompt_ids[start + 1 :]])  # [L - 1 + n + P]
        key = PrefixKey(
            request.clip_id, media_fingerprint(request.event_images), tuple(expanded[: span[1]].tolist())
        )

        def build_prefix(t: dict[str, float]) -> tuple[torch.Tensor, dict]:
            with timed(self.device, t, "preprocess_ms"):
                pixels = self.preprocess(request.event_images)  # [n, 3, S, S]
            with timed(self.device, t, "vision_ms"), torch.inference_mode():
                event_embeds = self.model.encode_events(pixels)  # [n + P, H]
                embeds = self.model.embed_prompt(prompt_ids[: start + 1], event_embeds)  # [start + n + P, H]
            return embeds, {"event_embeds": event_embeds}

        def suffix_embeds() -> torch.Tensor:
            ids = prompt_ids[start + 1 :].to(self.device)
            return self.model.model.embed_tokens(ids)  # [L - 1 - start, H]

        state = self._prefill_prefixed(
            key, expanded, span[1], build_prefix, suffix_embeds,
            return_hidden=return_hidden, timings=timings,
        )
        state.extra["event_span"] = span
        return state

    def decode_text(self, ids: list[int]) -> str:
        """Text of ``ids``, skipping specials and logits ids the tokenizer lacks."""
        n = len(self.tokenizer)
        return self.tokenizer.decode([i for i in ids if 0 <= i < n], skip_special_tokens=True)
