"""A preallocated (static) KV cache whose only state is a length pointer.

Keys and values of every layer live in two tensors allocated once::

    k, v: [layers, kv_heads, capacity, head_dim]

(head-major, so a layer's ``k[i, :, :n]`` is already the ``[kv_heads, n, head_dim]``
layout ``scaled_dot_product_attention`` reads, without a copy).  A forward pass writes
positions ``[length, length + T)``; which positions *exist* is decided by ``length``
alone.  Hence

* rollback of n positions is ``length -= n`` (O(1), nothing is freed or copied);
* positions ``>= length`` may hold stale values from rejected drafts or from the padding
  of a fixed-size step; attention masks them and later writes overwrite them;
* a prefix stays in place: restoring ``length = prefix_len`` makes every later question on
  the same clip reuse positions ``< prefix_len`` and overwrite the rest.

``max_len`` is the logical limit (prompt + answer); ``capacity = max_len + slack`` where
the slack absorbs the padded tail of a bucketed step at the very end of the context, so
padding never writes out of bounds.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass

import torch


@dataclass(eq=False)
class StaticKVCache:
    """Preallocated keys/values plus the number of valid positions (``length``).

    ``prefix_key`` / ``prefix_len``: which cached prompt prefix (if any) positions
    ``[0, prefix_len)`` currently hold; maintained by the prefix cache, cleared by
    :meth:`invalidate_prefix_from` when a pass overwrites those positions.
    """

    k: torch.Tensor  # [layers, kv_heads, capacity, head_dim]
    v: torch.Tensor  # [layers, kv_heads, capacity, head_dim]
    max_len: int
    length: int = 0
    prefix_key: Hashable | None = None
    prefix_len: int = 0

    is_croppable = True  # read by evspec.models.kv.rollback

    def __post_init__(self) -> None:
        if self.k.shape != self.v.shape or self.k.ndim != 4:
            raise ValueError(
                f"StaticKVCache needs k and v of one shape [layers, kv_heads, capacity, "
                f"head_dim]; got {tuple(self.k.shape)} and {tuple(self.v.shape)}"
            )
        if not 1 <= self.max_len <= self.capacity:
            raise ValueError(
                f"StaticKVCache.max_len {self.max_len} must be in [1, capacity {self.capacity}]"
            )
        if not 0 <= self.length <= self.max_len:
            raise ValueError(f"StaticKVCache.length {self.length} outside [0, {self.max_len}]")

    # -- construction ----------------------------------------------------------------------
    @classmethod
    def allocate(
        cls,
        *,
        layers: int,
        kv_heads: int,
        head_dim: int,
        max_len: int,
        slack: int = 0,
        dtype: torch.dtype,
        device: torch.device | str,
    ) -> StaticKVCache:
        """Zero-filled cache for ``max_len`` positions plus ``slack`` scratch positions."""
        for name, value in (("layers", layers), ("kv_heads", kv_heads), ("head_dim", head_dim)):
            if value < 1:
                raise ValueError(f"StaticKVCache.allocate: {name} must be >= 1, got {value}")
        if max_len < 1:
            raise ValueError(f"StaticKVCache.allocate: max_len must be >= 1, got {max_len}")
        if slack < 0:
            raise ValueError(f"StaticKVCache.allocate: slack must be >= 0, got {slack}")
        shape = (layers, kv_heads, max_len + slack, head_dim)
        k = torch.zeros(shape, dtype=dtype, device=device)
        v = torch.zeros(shape, dtype=dtype, device=device)
        return cls(k=k, v=v, max_len=max_len)

    # -- geometry --------------------------------------------------------------------------
    @property
    def capacity(self) -> int:
        """Physical positions (``max_len`` + slack)."""
        return int(self.k.shape[2])

    @property
    def layers(self) -> int:
        return int(self.k.shape[0])

    @property
    def nbytes(self) -> int:
        return self.k.numel() * self.k.element_size() * 2

    def get_seq_length(self) -> int:
        """Valid positions (the same call as transformers caches, for ``kv.cache_length``)."""
        return self.length

    def room(self) -> int:
        """Positions still free before ``max_len``."""
        return self.max_len - self.length

    # -- the length pointer ----------------------------------------------------------------
    def check_fits(self, start: int, count: int) -> None:
        """Raise unless positions ``[start, start + count)`` lie within ``max_len``."""
        if start < 0 or count < 0 or start + count > self.max_len:
            raise ValueError(
                f"static KV cache full: positions {start}..{start + count} exceed max_len "
                f"{self.max_len}; call enable_fast(max_len=...) with a larger value"
            )

    def advance(self, count: int) -> None:
        """Mark ``count`` freshly written positions as valid."""
        self.check_fits(self.length, count)
        self.length += count

    def rollback(self, n: int) -> None:
        """Forget the last ``n`` positions: O(1), the values stay until overwritten."""
        if not 0 <= n <= self.length:
            raise ValueError(f"cannot roll back {n} positions from a cache holding {self.length}")
        self.length -= n

    def crop(self, amount: int) -> None:
        """transformers ``DynamicCache.crop`` semantics: negative = remove ``-amount``
        positions, otherwise keep the first ``amount``."""
        self.rollback(-amount if amount < 0 else max(0, self.length - amount))

    def snapshot(self) -> int:
        """The current length (restoring it later brings the same prefix back)."""
        return self.length

    def restore(self, length: int) -> None:
        """Set the length to a snapshot taken earlier; positions below it must not have
        been overwritten since (the prefix cache tracks that with ``prefix_key``)."""
        if not 0 <= length <= self.max_len:
            raise ValueError(f"cannot restore length {length}: outside [0, {self.max_len}]")
        self.length = length

    def reset(self) -> None:
        self.length = 0

    # -- prefix bookkeeping ----------------------------------------------------------------
    def invalidate_prefix_from(self, start: int) -> None:
        """A pass writes from ``start``: a held prefix reaching past it is gone."""
        if self.prefix_key is not None and start < self.prefix_len:
            self.prefix_key, self.prefix_len = None, 0

    def export_prefix(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Copies of positions ``[0, n)``: ``([layers, kv_heads, n, head_dim]`` k, v)."""
        if not 0 < n <= self.length:
            raise ValueError(f"cannot export {n} positions from a cache holding {self.length}")
        return self.k[:, :, :n].clone(), self.v[:, :, :n].clone()

    def import_prefix(self, k: torch.Tensor, v: torch.Tensor) -> None:
        """Write exported positions back to ``[0, n)`` and set ``length = n``."""
        n = int(k.shape[2])
        if k.shape != v.shape or k.shape[:2] != self.k.shape[:2] or k.shape[3] != self.k.shape[3]:
            raise ValueError(
                f"prefix of shape {tuple(k.shape)} does not match this cache "
                f"{tuple(self.k.shape)} (layers, kv_heads, positions, head_dim)"
            )
        self.check_fits(0, n)
        self.k[:, :, :n].copy_(k)
        self.v[:, :, :n].copy_(v)
        self.length = n
