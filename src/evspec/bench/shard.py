"""Splitting long runs (``bench``, ``collect``) over processes, GPUs and nodes.

A run is cut into ``count`` *shards*; shard ``index`` does the work units whose group key
hashes to it.  Where the shard comes from:

* ``torchrun`` (and any launcher that sets the same variables): ``RANK`` / ``WORLD_SIZE``
  give the shard, ``LOCAL_RANK`` the GPU on this node.  The processes never talk to each
  other: no process group is created, nothing but the environment is read.
* a scheduler array job: ``--num-chunks N --chunk-idx I`` (e.g. SLURM's
  ``$SLURM_ARRAY_TASK_COUNT`` and ``$SLURM_ARRAY_TASK_ID``).
* both: each array task runs ``torchrun`` over its node's GPUs; shard =
  ``chunk_idx * WORLD_SIZE + RANK`` of ``num_chunks * WORLD_SIZE``.

The partition (:func:`partition`) is a pure function of the item's group key (its clip,
so that every question of a clip lands in the same shard and reuses the clip's prefix
cache): a stable SHA-256 hash, not Python's salted ``hash``.  An item therefore belongs to
the same shard whatever else is in the dataset, so growing ``--limit`` between sessions
never moves finished work to another shard.  The price is balance: shards differ by about
the square root of their size (±11 on 125 clips per shard) rather than by one item.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

#: recorded in every shard plan; merge refuses shards partitioned by another rule
PARTITION_RULE = "sha256(group key) mod count, v1"
_SALT = b"evspec-shard-v1\x00"
_SHARD_DIR = re.compile(r"^shard-(\d{5,})-of-(\d{5,})$")
_SOURCES = ("single", "args", "torchrun", "torchrun+args")


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` of ``count`` (0-based).

    ``local_rank``: the process's slot on its node (torchrun's ``LOCAL_RANK``), used to pick
    its GPU; None outside a launcher.  ``source``: where the numbers came from (``single``,
    ``args``, ``torchrun`` or ``torchrun+args``), recorded with the run.
    """

    index: int = 0
    count: int = 1
    local_rank: int | None = None
    source: str = "single"

    def __post_init__(self) -> None:
        for name in ("index", "count"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int):
                raise ValueError(f"Shard.{name} must be an integer, got {v!r}")
        if self.count < 1:
            raise ValueError(f"Shard.count must be >= 1 (the number of chunks), got {self.count}")
        if not 0 <= self.index < self.count:
            raise ValueError(
                f"Shard.index {self.index} is outside 0..{self.count - 1}: chunk indices are "
                f"0-based and smaller than the number of chunks"
            )
        if self.local_rank is not None and self.local_rank < 0:
            raise ValueError(f"Shard.local_rank must be >= 0, got {self.local_rank}")
        if self.source not in _SOURCES:
            raise ValueError(f"Shard.source must be one of {_SOURCES}, got {self.source!r}")

    @property
    def sharded(self) -> bool:
        """Whether the work is split at all (``count > 1``)."""
        return self.count > 1

    @property
    def name(self) -> str:
        """The shard's output folder name, ``shard-{index:05d}-of-{count:05d}``."""
        return shard_dir_name(self.index, self.count)

    def owns(self, group_key: str) -> bool:
        """Whether the work unit with this group key belongs to this shard."""
        return shard_of(group_key, self.count) == self.index

    def describe(self) -> dict[str, object]:
        return {"index": self.index, "count": self.count, "local_rank": self.local_rank, "source": self.source}


def shard_dir_name(index: int, count: int) -> str:
    return f"shard-{index:05d}-of-{count:05d}"


def parse_shard_dir(name: str) -> tuple[int, int] | None:
    """``(index, count)`` of a folder named like :attr:`Shard.name`, else None."""
    m = _SHARD_DIR.match(name)
    return (int(m.group(1)), int(m.group(2))) if m else None


def shard_dirs(run_dir: Path) -> dict[int, dict[int, Path]]:
    """The shard folders directly under ``run_dir``: ``{count: {index: path}}``."""
    found: dict[int, dict[int, Path]] = {}
    if not Path(run_dir).is_dir():
        return found
    for path in sorted(Path(run_dir).iterdir()):
        parsed = parse_shard_dir(path.name)
        if parsed is not None and path.is_dir():
            index, count = parsed
            found.setdefault(count, {})[index] = path
    return found


def _env_int(env: Mapping[str, str], name: str) -> int | None:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return None
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"environment variable {name}={raw!r} is not an integer (set by torchrun)") from None
    if value < 0:
        raise ValueError(f"environment variable {name}={value} must be >= 0")
    return value


def shard_from_env_or_args(
    num_chunks: int | None = None,
    chunk_idx: int | None = None,
    *,
    env: Mapping[str, str] | None = None,
) -> Shard:
    """This process's shard, from torchrun's ``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` and/or
    ``--num-chunks``/``--chunk-idx`` (both or neither); a single shard when none is set.

    ``env`` defaults to ``os.environ`` (tests pass a dict).
    """
    env = os.environ if env is None else env
    if (num_chunks is None) != (chunk_idx is None):
        raise ValueError("--num-chunks and --chunk-idx go together: give both (e.g. --num-chunks 8 --chunk-idx 3) or neither")
    if num_chunks is not None and chunk_idx is not None:
        if num_chunks < 1:
            raise ValueError(f"--num-chunks must be >= 1, got {num_chunks}")
        if not 0 <= chunk_idx < num_chunks:
            raise ValueError(f"--chunk-idx {chunk_idx} must be in 0..{num_chunks - 1} (0-based, < --num-chunks)")
    rank, world, local = _env_int(env, "RANK"), _env_int(env, "WORLD_SIZE"), _env_int(env, "LOCAL_RANK")
    if (rank is None) != (world is None):
        have = "RANK" if rank is not None else "WORLD_SIZE"
        raise ValueError(
            f"only {have} is set in the environment: launch with torchrun (which sets RANK and "
            f"WORLD_SIZE), or unset it and use --num-chunks/--chunk-idx"
        )
    if world is not None and rank is not None:
        if world < 1 or rank >= world:
            raise ValueError(f"environment: RANK={rank} must be in 0..WORLD_SIZE-1 (WORLD_SIZE={world})")
        if num_chunks is not None and chunk_idx is not None:
            return Shard(chunk_idx * world + rank, num_chunks * world, local, "torchrun+args")
        return Shard(rank, world, local, "torchrun")
    if num_chunks is not None and chunk_idx is not None:
        return Shard(chunk_idx, num_chunks, local, "args")
    return Shard(0, 1, local, "single")


def shard_of(group_key: str, count: int) -> int:
    """The shard (of ``count``) that owns ``group_key``: a salted SHA-256, stable across
    processes, machines and Python versions."""
    if count < 1:
        raise ValueError(f"shard count must be >= 1, got {count}")
    digest = hashlib.sha256(_SALT + group_key.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % count


def group_key(item: object) -> str:
    """An item's group key: its ``clip_id`` (questions of one clip stay together), else its
    ``request_id`` or ``key``."""
    for attr in ("clip_id", "request_id", "key"):
        value = getattr(item, attr, None)
        if value:
            return str(value)
    raise TypeError(
        f"{type(item).__name__} has no clip_id, request_id or key to partition by; pass key=..."
    )


def partition(items: Iterable[T], shard: Shard, key: Callable[[T], str] = group_key) -> list[T]:
    """The items of ``shard``, in their original order (a pure function of each item's key)."""
    return [item for item in items if shard_of(key(item), shard.count) == shard.index]


def ids_digest(ids: Sequence[str]) -> str:
    """SHA-256 of the ordered work-unit ids of a whole run: shards of one run must agree."""
    h = hashlib.sha256()
    for i in ids:
        h.update(i.encode("utf-8"))
        h.update(b"\n")
    return h.hexdigest()


def select_device(device: str, shard: Shard, *, cuda_count: int | None = None) -> str:
    """The device a shard should use: ``cuda:{LOCAL_RANK}`` when ``device`` is ``auto``, the
    process runs under a launcher and CUDA is available; else ``device`` unchanged.

    ``cuda_count`` defaults to ``torch.cuda.device_count()``.  More processes than GPUs on a
    node is refused (name a device explicitly to share GPUs on purpose).
    """
    if device != "auto" or shard.local_rank is None:
        return device
    if cuda_count is None:
        import torch

        cuda_count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if cuda_count == 0:
        return device
    if shard.local_rank >= cuda_count:
        raise ValueError(
            f"LOCAL_RANK={shard.local_rank} but this node has {cuda_count} visible GPU(s): start at "
            f"most {cuda_count} processes per node (torchrun --nproc-per-node {cuda_count}), or pass "
            f"--device cuda to share GPUs on purpose"
        )
    return f"cuda:{shard.local_rank}"
