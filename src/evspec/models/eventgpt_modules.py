"""The EventGPT network (MODELS.md, "EventGPT"), as the official inference code composes it::

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
``state_dict`` loads without renaming.  This file holds the ``nn.Module`` s
(:class:`EventVisualTower`, :class:`EventGPTModel`) and :func:`build_model` (seeded or
uninitialised construction on a device, in a dtype).  The config is in
:mod:`evspec.models.eventgpt_config`, the decoding wrapper in :mod:`evspec.models.eventgpt`.
"""

from __future__ import annotations

from contextlib import contextmanager, nullcontext
from typing import Iterator

import torch
from torch import nn
from transformers import CLIPVisionConfig, CLIPVisionModel, LlamaModel
from transformers.initialization import no_init_weights

from evspec.models.eventgpt_config import EVENT_TOKEN_INDEX, EventGPTConfig


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
