"""EventGPT's side of the heads and adapters: the event embedding, the prompt's hidden
states, and a teacher-forced pass over an answer.  ``collect`` (training data) and the
drafters (inference) call the same functions, so the features match.

Event memory choice (``HeadConfig.memory_source``):

* ``"events"`` (default): the pooled event embedding ``[n + P, H_d]`` from
  ``EventGPTModel.encode_events``: CLIP tower + projector + adaptor + pooling, no LLM
  pass.  At 7B this costs the ~9 ms of the tower instead of a ~24 ms EventGPT prefill, and
  it is the information the event camera adds; the question reaches the head anyway
  through the target's hidden states.
* ``"prefill"``: EventGPT's last-layer hidden states over its whole prompt ``[L_d, H_d]``
  (event tokens contextualised by the question): richer, one full EventGPT prefill dearer.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import torch

from evspec.models.causal_lm import timed
from evspec.models.eventgpt import EventGPT
from evspec.models.request import Request


@dataclass
class EventGPTPass:
    """One cache-free EventGPT forward.

    ``prompt_ids``: ``[L]`` with one ``-200`` placeholder; ``event_embeds``: ``[E, H_d]``;
    ``prompt_len``: positions of the expanded prompt (``L - 1 + E``); ``hidden``:
    ``[prompt_len + A, H_d]`` last-layer states over prompt + ``A`` fed answer tokens.
    """

    prompt_ids: torch.Tensor
    event_embeds: torch.Tensor
    prompt_len: int
    hidden: torch.Tensor | None
    timings: dict[str, float]


@torch.inference_mode()
def event_embeds(
    model: EventGPT, request: Request, *, untimed: bool = False
) -> tuple[torch.Tensor, dict[str, float]]:
    """The pooled event embedding ``[n + P, H_d]`` of ``request.event_images`` and the
    milliseconds spent (``preprocess_ms``, ``vision_ms``).  ``untimed``: no device
    synchronisation around the stages (a side stream's work must not wait for the main
    stream's); the timings are then empty."""
    timings: dict[str, float] = {}

    def stage(key: str) -> AbstractContextManager:
        return nullcontext() if untimed else timed(model.device, timings, key)

    with stage("preprocess_ms"):
        pixels = model.preprocess(request.event_images)  # [n, 3, S, S]
    with stage("vision_ms"):
        emb = model.model.encode_events(pixels)  # [n + P, H_d]
    return emb, timings


@torch.inference_mode()
def eventgpt_pass(
    model: EventGPT,
    request: Request,
    answer_ids: list[int] | None = None,
    *,
    run_decoder: bool = True,
    shared_vocab: int | None = None,
) -> EventGPTPass:
    """Encode the events, build the prompt and (``run_decoder``) run the decoder over
    prompt + ``answer_ids``.  Answer ids outside ``shared_vocab`` are fed as ``<unk>`` (0),
    as the model drafters do."""
    emb, timings = event_embeds(model, request)
    prompt_ids = model.build_prompt_ids(request.question)  # [L]
    prompt_len = int(prompt_ids.numel()) - 1 + int(emb.shape[0])
    hidden = None
    if run_decoder:
        with timed(model.device, timings, "prefill_ms"):
            embeds = model.model.embed_prompt(prompt_ids, emb)  # [prompt_len, H_d]
            if answer_ids:
                limit = shared_vocab if shared_vocab is not None else model.vocab_size
                fed = torch.tensor([t if 0 <= t < limit else 0 for t in answer_ids], device=embeds.device)
                embeds = torch.cat([embeds, model.model.model.embed_tokens(fed)], dim=0)
            if embeds.shape[0] > model.max_context:
                raise ValueError(
                    f"EventGPT sequence of {embeds.shape[0]} positions exceeds its context "
                    f"{model.max_context}; use a shorter --max-new-tokens"
                )
            hidden = model.decoder(inputs_embeds=embeds[None], use_cache=False).last_hidden_state[0]
    return EventGPTPass(prompt_ids, emb, prompt_len, hidden, timings)


def event_memory(model: EventGPT, request: Request, source: str) -> tuple[torch.Tensor, dict[str, float]]:
    """The event-head's memory for ``request``: ``"events"`` -> ``[n + P, H_d]``,
    ``"prefill"`` -> EventGPT's prompt hidden states ``[L_d, H_d]``; plus timings."""
    if source == "events":
        return event_embeds(model, request)
    if source == "prefill":
        p = eventgpt_pass(model, request)
        assert p.hidden is not None
        return p.hidden, p.timings
    raise ValueError(f"unknown event memory source {source!r}; use 'events' or 'prefill'")

