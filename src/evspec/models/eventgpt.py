"""EventGPT, our implementation: the event-camera drafter (MODELS.md, "EventGPT").

This file holds :class:`EventGPT`, the network wrapped for decoding: the ``eventgpt_v1``
prompt with its ``<event>`` placeholder, CLIP preprocessing of the event images
(:func:`make_image_processor`), prefill (optionally through the per-clip prefix cache) and,
from :class:`~evspec.models.causal_lm.CausalLMWrapper`, score / rollback; so it can serve
as a drafter or, in tests, as a target.

The parts live by concept, and are re-exported here so ``from evspec.models.eventgpt
import ...`` keeps working for all of them:

* :mod:`evspec.models.eventgpt_config`: :class:`EventGPTConfig` and the token
  conventions (``EVENT_TOKEN_INDEX``, ``EV_START``/``EV_END``/``EV_PATCH``, ``CONTEXT_CAP``);
* :mod:`evspec.models.eventgpt_modules`: the network (:class:`EventGPTModel`, whose
  ``state_dict`` names are the official release's) and :func:`build_model`;
* :mod:`evspec.models.eventgpt_loader`: the checkpoint loader and saver;
* :mod:`evspec.models.presets.eventgpt`: the named shapes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from transformers import CLIPImageProcessorPil, PreTrainedTokenizerBase

from evspec.models.causal_lm import CausalLMWrapper, timed
from evspec.models.device_preprocess import DevicePixels
from evspec.models.eventgpt_config import (
    CONTEXT_CAP,
    EV_END,
    EV_PATCH,
    EV_START,
    EVENT_TOKEN_INDEX,
    PROMPT_STYLES,
    EventGPTConfig,
)
from evspec.models.eventgpt_modules import EventGPTModel, EventVisualTower, build_model
from evspec.models.fast.prefix_cache import PrefixKey, media_fingerprint
from evspec.models.request import EventImages, Request
from evspec.models.state import TargetState

__all__ = [
    "CONTEXT_CAP",
    "EVENT_PLACEHOLDER",
    "EVENT_TOKEN_INDEX",
    "PROMPT_STYLES",
    "EV_END",
    "EV_PATCH",
    "EV_START",
    "SYSTEM_PROMPT",
    "EventGPT",
    "EventGPTConfig",
    "EventGPTModel",
    "EventVisualTower",
    "build_model",
    "make_image_processor",
]

EVENT_PLACEHOLDER = "<event>"
SYSTEM_PROMPT = (
    "A chat between a curious human and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the human's questions."
)


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
        """The ``eventgpt_v1`` prompt (Vicuna v1 style) with the ``<event>`` placeholder,
        shown as ``config.prompt_style`` says (see :class:`EventGPTConfig`)."""
        if EVENT_PLACEHOLDER in question:
            raise ValueError(f"the question must not contain the reserved {EVENT_PLACEHOLDER!r}")
        event = EVENT_PLACEHOLDER
        if self.config.prompt_style == "release" or self.config.mm_use_im_start_end:
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

    #: the image processor's steps on the device (None: the HF processor on the CPU)
    device_pixels: DevicePixels | None = None

    def enable_device_preprocess(self) -> None:
        """Preprocess event images with torch on the model's device
        (:mod:`evspec.models.device_preprocess`: bitwise the HF pixels at the tower's size,
        within one uint8 level after a resize)."""
        self.device_pixels = DevicePixels.from_processor(self.image_processor)

    def preprocess(self, event_images: EventImages | None) -> torch.Tensor:
        """``[n, H, W, 3]`` uint8 event images (or n ``[H_i, W_i, 3]`` images of differing
        sizes) -> ``[n, 3, S, S]`` pixels on the model's device and dtype; each image is
        resized and cropped on its own, as the release's processor does."""
        if event_images is None:
            raise ValueError("EventGPT needs Request.event_images ([n, H, W, 3] uint8); got None")
        for image in event_images:
            if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
                raise ValueError(
                    "Request.event_images must be uint8 [n, H, W, 3]; got an image of "
                    f"{image.dtype} {tuple(image.shape)}"
                )
        if self.device_pixels is not None:  # the same steps on the device, image by image
            if isinstance(event_images, np.ndarray):
                return self.device_pixels(event_images, self.device, self.dtype)
            return torch.cat([self.device_pixels(image[None], self.device, self.dtype)
                              for image in event_images])
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
        n = len(request.event_images)
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
        n_event = len(request.event_images) + self.config.tokens_per_image
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
