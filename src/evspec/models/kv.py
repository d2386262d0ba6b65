"""KV-cache helpers over transformers caches (dynamic caches; static ones come with the
fast engine).  transformers 5.17 deprecates ``DynamicCache.crop`` with a positive length
and newer 5.x refuse it, so rollback always passes the negative count to remove."""

from __future__ import annotations

from typing import Any


def cache_length(cache: Any) -> int:
    """Number of positions held by ``cache`` (0 for ``None``)."""
    return 0 if cache is None else int(cache.get_seq_length())


def rollback(cache: Any, n_remove: int) -> None:
    """Drop the last ``n_remove`` positions of every layer, in place."""
    if n_remove < 0:
        raise ValueError(f"rollback count must be >= 0, got {n_remove}")
    if n_remove == 0:
        return
    have = cache_length(cache)
    if n_remove > have:
        raise ValueError(f"cannot roll back {n_remove} positions from a cache holding {have}")
    if not getattr(cache, "is_croppable", True):
        raise TypeError(f"{type(cache).__name__} cannot be cropped")
    cache.crop(-n_remove)
