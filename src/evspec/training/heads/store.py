"""The on-disk format of ``evspec collect``: chunked safetensors plus a JSON index.

A data folder holds

* ``index-{split}-{shard}.json``: format tag, the collect settings, the dims, and the list
  of finished chunks with the example keys each holds (resume skips them);
* ``{split}-{shard}-{k:05d}.safetensors``: up to ``chunk_size`` examples, flattened;
* ``frozen.safetensors``: the target's ``lm_head.weight`` and ``embed_tokens.weight``
  (heads and adapters train against them, frozen) and the drafter's shared vocabulary.

Per example (``m`` answer tokens, position ``j`` = the state that predicts ``x_j``):
``answer_ids [m]``, ``target_hidden [m, H_t]`` (``h_0`` = the prompt's last state),
``topk_ids``/``topk_logp [m, K]`` (the target's log-probabilities of its top K at j),
``draft_answer_ids [m]`` (the same answer as fed to EventGPT, ids outside the shared
vocabulary as ``<unk>``), ``draft_hidden [m, H_d]``, ``draft_top1 [m]`` (EventGPT's own
greedy guess), ``draft_prompt_ids [L]`` (with the -200 placeholder); per clip
``event_embeds [n + P, H_d]`` and optionally ``video_features [N_v, H_t]``; optionally
per example ``prefill_hidden [L_d, H_d]``.  Flattened tensors carry ``*_off`` offsets.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from evspec.data.atomic import atomic_file, atomic_write_text
from evspec.models.safe_load import load_safetensors, read_json_object

STORE_FORMAT = "evspec-collect"
STORE_VERSION = 1
FROZEN_FILE = "frozen.safetensors"

_TOKEN_FIELDS = ("answer_ids", "draft_answer_ids", "target_hidden", "topk_ids", "topk_logp",
                 "draft_hidden", "draft_top1")


@dataclass
class Example:
    """One (clip, question) with both models teacher-forced on the target's answer."""

    key: str
    clip_id: str
    question: str
    qtype: str | None
    split: str
    answer_ids: torch.Tensor  # [m] int64
    target_hidden: torch.Tensor  # [m, H_t]
    topk_ids: torch.Tensor  # [m, K] int64
    topk_logp: torch.Tensor  # [m, K] float32
    draft_answer_ids: torch.Tensor  # [m] int64
    draft_hidden: torch.Tensor  # [m, H_d]
    draft_top1: torch.Tensor  # [m] int64
    draft_prompt_ids: torch.Tensor  # [L] int64, one -200
    event_embeds: torch.Tensor  # [E, H_d]
    video_features: torch.Tensor | None = None  # [N_v, H_t]
    prefill_hidden: torch.Tensor | None = None  # [L_d, H_d]

    @property
    def length(self) -> int:
        return int(self.answer_ids.numel())

    def meta(self) -> dict[str, Any]:
        return {"key": self.key, "clip_id": self.clip_id, "question": self.question,
                "qtype": self.qtype, "split": self.split}


def _atomic_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=1) + "\n")


def _atomic_save(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    with atomic_file(path) as tmp:
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp), metadata=metadata)


def _offsets(lengths: list[int]) -> torch.Tensor:
    out = torch.zeros(len(lengths) + 1, dtype=torch.long)
    if lengths:
        out[1:] = torch.cumsum(torch.tensor(lengths, dtype=torch.long), 0)
    return out


class ChunkWriter:
    """Appends examples of one (split, shard) and flushes every ``chunk_size`` of them.

    ``header`` (settings, dims) is written into the index; a resumed writer checks it
    matches, so a data folder never mixes two settings.
    """

    def __init__(self, folder: Path, split: str, shard: int, header: dict[str, Any], chunk_size: int = 256) -> None:
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.split, self.shard, self.chunk_size = split, shard, chunk_size
        self.index_path = self.folder / f"index-{split}-{shard:03d}.json"
        self._buffer: list[Example] = []
        if self.index_path.is_file():
            self.index = json.loads(self.index_path.read_text(encoding="utf-8"))
            _check_header(self.index_path, self.index.get("header", {}), header)
        else:
            self.index = {"format": STORE_FORMAT, "version": STORE_VERSION, "split": split,
                          "shard": shard, "header": header, "chunks": []}
            _atomic_json(self.index_path, self.index)

    @property
    def done_keys(self) -> set[str]:
        return {k for c in self.index["chunks"] for k in c["keys"]}

    @property
    def written(self) -> int:
        return sum(c["n"] for c in self.index["chunks"])

    def add(self, example: Example) -> None:
        self._buffer.append(example)
        if len(self._buffer) >= self.chunk_size:
            self.flush()

    def flush(self) -> None:
        """Write the buffered examples as one chunk and record it in the index."""
        if not self._buffer:
            return
        name = f"{self.split}-{self.shard:03d}-{len(self.index['chunks']):05d}.safetensors"
        tensors, meta = pack(self._buffer)
        _atomic_save(self.folder / name, tensors, {"evspec": json.dumps(meta)})
        self.index["chunks"].append({"file": name, "n": len(self._buffer),
                                     "keys": [e.key for e in self._buffer]})
        _atomic_json(self.index_path, self.index)
        self._buffer = []


def _check_header(path: Path, have: dict, want: dict) -> None:
    diff = sorted(k for k in set(have) | set(want) if have.get(k) != want.get(k))
    if diff:
        detail = ", ".join(f"{k}: {have.get(k)!r} vs {want.get(k)!r}" for k in diff[:4])
        raise ValueError(
            f"{path}: this data folder was collected with other settings ({detail}); "
            "collect into a new --out folder or repeat the original settings"
        )


def pack(examples: list[Example]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Flatten examples into named tensors (+ offsets) and a metadata dict."""
    t: dict[str, torch.Tensor] = {}
    lengths = [e.length for e in examples]
    t["tok_off"] = _offsets(lengths)
    for name in _TOKEN_FIELDS:
        t[name] = torch.cat([getattr(e, name).cpu() for e in examples], dim=0)
    t["topk_ids"] = t["topk_ids"].to(torch.int32)
    t["prompt_off"] = _offsets([int(e.draft_prompt_ids.numel()) for e in examples])
    t["draft_prompt_ids"] = torch.cat([e.draft_prompt_ids.cpu() for e in examples])
    if all(e.prefill_hidden is not None for e in examples):
        t["prefill_off"] = _offsets([int(e.prefill_hidden.shape[0]) for e in examples])  # type: ignore[union-attr]
        t["prefill_hidden"] = torch.cat([e.prefill_hidden.cpu() for e in examples])  # type: ignore[union-attr]
    clips: list[str] = []
    first: dict[str, Example] = {}
    for e in examples:
        if e.clip_id not in first:
            first[e.clip_id] = e
            clips.append(e.clip_id)
    t["clip_of"] = torch.tensor([clips.index(e.clip_id) for e in examples], dtype=torch.long)
    t["event_off"] = _offsets([int(first[c].event_embeds.shape[0]) for c in clips])
    t["event_embeds"] = torch.cat([first[c].event_embeds.cpu() for c in clips])
    if all(first[c].video_features is not None for c in clips):
        t["video_off"] = _offsets([int(first[c].video_features.shape[0]) for c in clips])  # type: ignore[union-attr]
        t["video_features"] = torch.cat([first[c].video_features.cpu() for c in clips])  # type: ignore[union-attr]
    return t, {"examples": [e.meta() for e in examples], "clips": clips}


class Chunk:
    """A loaded chunk: ``len(chunk)`` examples, ``chunk[i]`` -> :class:`Example` (views)."""

    def __init__(self, path: Path) -> None:
        from safetensors import safe_open

        self.path = path
        fix = "re-run `evspec collect` into this folder"
        self.t = load_safetensors(path, fix)
        with safe_open(str(path), "pt") as fh:
            raw = (fh.metadata() or {}).get("evspec")
        try:
            self.meta = json.loads(raw) if raw is not None else None
        except json.JSONDecodeError:
            self.meta = None
        if not isinstance(self.meta, dict) or not isinstance(self.meta.get("examples"), list):
            raise ValueError(f"{path}: no readable evspec metadata in the chunk: {fix}")

    def __len__(self) -> int:
        return len(self.meta["examples"])

    def _slice(self, name: str, off: str, i: int) -> torch.Tensor:
        o = self.t[off]
        return self.t[name][int(o[i]) : int(o[i + 1])]

    def __getitem__(self, i: int) -> Example:
        m = self.meta["examples"][i]
        c = int(self.t["clip_of"][i])
        tok = {name: self._slice(name, "tok_off", i) for name in _TOKEN_FIELDS}
        tok["topk_ids"] = tok["topk_ids"].long()
        return Example(
            key=m["key"], clip_id=m["clip_id"], question=m["question"], qtype=m["qtype"], split=m["split"],
            draft_prompt_ids=self._slice("draft_prompt_ids", "prompt_off", i),
            event_embeds=self._slice("event_embeds", "event_off", c),
            video_features=self._slice("video_features", "video_off", c) if "video_off" in self.t else None,
            prefill_hidden=self._slice("prefill_hidden", "prefill_off", i) if "prefill_off" in self.t else None,
            **tok,
        )


@dataclass
class CollectedData:
    """Read side of a data folder (all shards, all splits)."""

    folder: Path
    indexes: list[dict] = field(default_factory=list)

    @classmethod
    def open(cls, folder: str | Path) -> CollectedData:
        folder = Path(folder)
        paths = sorted(folder.glob("index-*.json"))
        if not paths:
            raise FileNotFoundError(
                f"{folder}: no index-*.json; is this a folder written by `evspec collect`?"
            )
        indexes = []
        for p in paths:
            idx = read_json_object(p, "re-run `evspec collect` into this folder")
            if idx.get("format") != STORE_FORMAT or idx.get("version") != STORE_VERSION:
                raise ValueError(f"{p}: format {idx.get('format')!r} v{idx.get('version')}, expected "
                                 f"{STORE_FORMAT!r} v{STORE_VERSION}")
            indexes.append(idx)
        dims = [i["header"]["dims"] for i in indexes]
        if any(d != dims[0] for d in dims):
            raise ValueError(f"{folder}: index files disagree on model dims (collected with different models)")
        return cls(folder, indexes)

    @property
    def header(self) -> dict[str, Any]:
        return self.indexes[0]["header"]

    @property
    def dims(self) -> dict[str, Any]:
        return self.header["dims"]

    def chunk_files(self, split: str) -> list[Path]:
        return [self.folder / c["file"] for i in self.indexes if i["split"] == split for c in i["chunks"]]

    def count(self, split: str) -> int:
        return sum(c["n"] for i in self.indexes if i["split"] == split for c in i["chunks"])

    def splits(self) -> list[str]:
        return sorted({i["split"] for i in self.indexes if i["chunks"]})

    def frozen(self) -> dict[str, torch.Tensor]:
        path = self.folder / FROZEN_FILE
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing; re-run `evspec collect` into this folder")
        return load_safetensors(path, "re-run `evspec collect` into this folder")

    def examples(
        self, split: str, *, shuffle: bool = False, seed: int = 0, limit: int | None = None
    ) -> Iterator[Example]:
        """Stream one split chunk by chunk (chunk order and order within a chunk shuffled
        when asked), so memory holds one chunk at a time."""
        files = self.chunk_files(split)
        if not files:
            raise ValueError(f"{self.folder}: no examples of split {split!r} (have {self.splits()})")
        rng = random.Random(seed)
        if shuffle:
            rng.shuffle(files)
        n = 0
        for path in files:
            chunk = Chunk(path)
            order = list(range(len(chunk)))
            if shuffle:
                rng.shuffle(order)
            for i in order:
                if limit is not None and n >= limit:
                    return
                yield chunk[i]
                n += 1


def write_frozen(folder: Path, tensors: dict[str, torch.Tensor]) -> None:
    """Write ``frozen.safetensors`` once (atomically; concurrent shards may race)."""
    path = Path(folder) / FROZEN_FILE
    if path.is_file():
        return
    _atomic_save(path, {k: v.detach().cpu() for k, v in tensors.items()}, {})
