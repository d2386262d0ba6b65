"""The Video-LLaVA prompt: ``USER: <video>\n{question} ASSISTANT:`` tokenised with BOS
once at the start and the single ``<video>`` id expanded to ``num_frames *
tokens_per_frame`` video ids (:func:`build_video_prompt_ids`), as
:meth:`evspec.models.target.VideoLlavaTarget.build_prompt_ids` uses it.  The question goes
in as given (no whitespace stripped), so the ids are those transformers'
``VideoLlavaProcessor`` makes of the same text with a tokenizer that adds BOS
(:func:`with_bos_on_encode` gives saved folders one).
"""

from __future__ import annotations

import torch
from transformers import PreTrainedTokenizerBase

PROMPT_TEMPLATE = "USER: <video>\n{question} ASSISTANT:"
VIDEO_PLACEHOLDER = "<video>"


def build_video_prompt_ids(
    tokenizer: PreTrainedTokenizerBase,
    question: str,
    *,
    bos_token_id: int,
    video_token_id: int,
    video_tokens: int,
) -> torch.Tensor:
    """``[L]`` int64 ids of ``USER: <video>\\n{question} ASSISTANT:`` with BOS once and
    the ``<video>`` id (``video_token_id``) repeated ``video_tokens`` times."""
    if VIDEO_PLACEHOLDER in question:
        raise ValueError(f"the question must not contain {VIDEO_PLACEHOLDER!r}")
    text = PROMPT_TEMPLATE.format(question=question)  # as given, as the HF processor takes it
    ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
    while ids and ids[0] == bos_token_id:
        ids.pop(0)
    at = [i for i, t in enumerate(ids) if t == video_token_id]
    if len(at) != 1:
        raise ValueError(
            f"the tokenizer produced {len(at)} {VIDEO_PLACEHOLDER!r} ids for the prompt "
            "(expected exactly one); is <video> a special token of this tokenizer?"
        )
    pos = at[0]
    video = [video_token_id] * video_tokens
    full = [bos_token_id, *ids[:pos], *video, *ids[pos + 1 :]]
    return torch.tensor(full, dtype=torch.long)


def with_bos_on_encode(
    tokenizer: PreTrainedTokenizerBase, bos_token_id: int
) -> PreTrainedTokenizerBase:
    """``tokenizer``, or a copy of it whose encoding starts with BOS (as LLaMA's does) when it
    adds none: what a saved folder needs for transformers' processor to build the prompt
    evspec builds.  evspec itself encodes without special tokens, so nothing else changes."""
    import copy

    from tokenizers import processors

    probe = tokenizer("a")["input_ids"]
    if probe and probe[0] == bos_token_id:
        return tokenizer
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise ValueError(
            f"{type(tokenizer).__name__} adds no BOS on encode and is not a fast tokenizer; "
            "save a tokenizer that adds BOS (add_bos_token=True)"
        )
    bos = tokenizer.convert_ids_to_tokens(bos_token_id)
    out = copy.deepcopy(tokenizer)
    out.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, bos_token_id)]
    )
    return out
