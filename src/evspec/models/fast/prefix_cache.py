"""Per-clip prefix cache: the prompt before the question is computed once per clip.

Both prompts put the media before the question (Video-LLaVA: ``<s>USER: <video×2056>``,
then ``\\n{question} ASSISTANT:``; EventGPT: system text, ``USER: <event×(n+577)>``,
then the question).  Everything up to and including the media embeddings is the
*prefix*; its KV (and the media features) depend only on the clip, so the research
datasets' ten questions per clip pay the vision tower and the 2000-token prefill once.

An entry is keyed by :class:`PrefixKey` = the request's ``clip_id``, a fingerprint of the
media array (so a reused ``clip_id`` with other pixels is a miss, never a wrong answer)
and the prefix token ids.  It holds the prefix KV (as transformers-layout tensors for the
dynamic path, or ``[layers, kv_heads, n, head_dim]`` copies for the static path, where
the prefix normally also stays in place in the cache), the prefix's last logits/hidden
(used when the suffix is empty) and model-specific extras (the media features).
Entries are evicted least-recently-used beyond ``max_clips``.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch

#: elements hashed from a media array: a strided sample, cheap even for raw video
FINGERPRINT_SAMPLES = 1 << 16


def media_fingerprint(array: np.ndarray | tuple[np.ndarray, ...] | None) -> str:
    """Shape, dtype and a hash of a strided sample of ``array`` (``""`` for None); a tuple
    of images of differing sizes gets one fingerprint per image."""
    if array is None:
        return ""
    if isinstance(array, tuple):
        return "|".join(media_fingerprint(image) for image in array)
    flat = np.ascontiguousarray(array).reshape(-1)
    step = max(1, flat.size // FINGERPRINT_SAMPLES)
    digest = hashlib.blake2b(np.ascontiguousarray(flat[::step]).tobytes(), digest_size=16)
    digest.update(flat[-1:].tobytes())
    return f"{array.dtype}{tuple(array.shape)}:{digest.hexdigest()}"


@dataclass(frozen=True)
class PrefixKey:
    """What makes two prompt prefixes interchangeable."""

    clip_id: str
    media: str  # media_fingerprint of the request's video / event images
    prefix_ids: tuple[int, ...]  # expanded prefix ids (media placeholders included)


@dataclass
class PrefixEntry:
    """A computed prefix.  ``kind``: which cache path produced ``kv``:
    ``"dynamic"``: ``[(k, v)]`` per layer, each ``[1, kv_heads, n, head_dim]``;
    ``"static"``: ``(k, v)`` each ``[layers, kv_heads, n, head_dim]``."""

    key: PrefixKey
    length: int
    kind: Literal["dynamic", "static"]
    kv: Any
    last_logits: torch.Tensor  # [V] float32 of the prefix's last position
    last_hidden: torch.Tensor | None  # [H] or None
    extra: dict[str, Any] = field(default_factory=dict)


class PrefixCache:
    """LRU map ``PrefixKey -> PrefixEntry`` with hit/miss counters."""

    def __init__(self, max_clips: int = 1) -> None:
        if max_clips < 1:
            raise ValueError(
                f"enable_prefix_cache(max_clips={max_clips}): keep at least 1 clip "
                "(disable the cache with disable_prefix_cache() instead)"
            )
        self.max_clips = int(max_clips)
        self._entries: OrderedDict[PrefixKey, PrefixEntry] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: PrefixKey, kind: str) -> PrefixEntry | None:
        """The entry for ``key`` computed on the ``kind`` path, counting a hit or miss."""
        entry = self._entries.get(key)
        if entry is None or entry.kind != kind:
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return entry

    def put(self, entry: PrefixEntry) -> None:
        self._entries[entry.key] = entry
        self._entries.move_to_end(entry.key)
        while len(self._entries) > self.max_clips:
            self._entries.popitem(last=False)

    def clear(self) -> None:
        self._entries.clear()

    @property
    def stats(self) -> dict[str, int]:
        return {"clips": len(self._entries), "hits": self.hits, "misses": self.misses}
