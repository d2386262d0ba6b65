"""The Video-LLaVA prompt: ``USER: <video>\n{question} ASSISTANT:`` tokenised with BOS
once at the start and the single ``<video>`` id expanded to ``num_frames *
tokens_per_frame`` video ids (:func:`build_video_prompt_ids`), as
:meth:`evspec.models.target.VideoLlavaTarget.build_prompt_ids` uses it.
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
    text = PROMPT_TEMPLATE.format(question=question.strip())
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
