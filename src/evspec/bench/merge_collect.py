"""``evspec merge DATA_DIR`` for a folder written by ``evspec collect`` in shards.

Collect shards write into one shared data folder (``index-{split}-{shard:03d}.json`` plus
their chunks; ``adapters.store``) and readers already read every index in it, so merging
is verification: before training on days of collected data, make sure it is all there
and consistent.  Per split, from the shards' plans (``plan-{split}-shard-…-of-….json``,
written by :func:`evspec.bench.shard_plan.write_collect_plan`):

1. every shard ``0..n-1`` has a plan, all plans agree (header, dataset, partition) and
   together cover the split without overlap;
2. each shard's index exists, carries the same header as its plan, and lists chunk
   files that exist;
3. no example key is stored by two shards, and every planned key is stored.

The result is written to ``merged.json`` in the folder (a record that the data was
verified, with counts); nothing else is touched.
"""

from __future__ import annotations

import datetime as _dt
import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evspec.bench.merge import MergeError, sample_keys, check_plans
from evspec.bench.records import write_json_atomic
from evspec.bench.shard import shard_dir_name
from evspec.bench.shard_plan import ShardPlan

MERGED_FILE = "merged.json"
_PLAN = re.compile(r"^plan-(.+)-shard-(\d{5,})-of-(\d{5,})\.json$")
_OPTIONS = "collect settings, models, --dataset, --split and --limit"


@dataclass
class CollectMerge:
    """What :func:`verify_collect` found: per split, shards and examples."""

    folder: Path
    splits: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def examples(self) -> int:
        return sum(s["examples"] for s in self.splits.values())


def is_collect_folder(folder: Path) -> bool:
    """Whether ``folder`` looks like an ``evspec collect`` data folder."""
    folder = Path(folder)
    return folder.is_dir() and (any(folder.glob("index-*.json")) or any(folder.glob("plan-*.json")))


def _plans_by_split(folder: Path) -> dict[str, dict[int, dict[int, ShardPlan]]]:
    """``{split: {count: {index: plan}}}``."""
    found: dict[str, dict[int, dict[int, ShardPlan]]] = {}
    for path in sorted(folder.glob("plan-*.json")):
        m = _PLAN.match(path.name)
        if m is None:
            continue
        plan = ShardPlan.read(path)
        split, index, count = m.group(1), int(m.group(2)), int(m.group(3))
        if plan.kind != "collect" or (plan.index, plan.count) != (index, count):
            raise MergeError(f"{path}: holds the plan of {plan.kind} {plan.name}, not the one its name says")
        found.setdefault(split, {}).setdefault(count, {})[index] = plan
    return found


def _index(folder: Path, split: str, plan: ShardPlan) -> dict[str, Any] | None:
    path = folder / f"index-{split}-{plan.index:03d}.json"
    if not path.exists():
        return None
    try:
        index = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise MergeError(f"{path}: not valid JSON ({exc})") from exc
    if index.get("header") != plan.identity:
        have, want = index.get("header") or {}, plan.identity
        keys = sorted(k for k in set(have) | set(want) if have.get(k) != want.get(k))
        raise MergeError(
            f"{path}: collected with other settings than its plan {plan.name} says (differ: "
            f"{', '.join(keys[:6])}); collect that shard again into a clean folder"
        )
    for chunk in index.get("chunks", []):
        if not (folder / chunk["file"]).is_file():
            raise MergeError(f"{path}: chunk {chunk['file']} is listed but missing; collect {plan.name} again")
    return index


def _verify_split(folder: Path, split: str, by_count: dict[int, dict[int, ShardPlan]]) -> dict[str, int]:
    if len(by_count) > 1:
        sizes = ", ".join(str(c) for c in sorted(by_count))
        raise MergeError(
            f"{folder}: split {split!r} has plans of splits into {sizes} shards; keep one split's "
            f"plans and data (or collect into a clean folder) and merge again"
        )
    count, plans = next(iter(by_count.items()))
    missing = [i for i in range(count) if i not in plans]
    if missing:
        raise MergeError(
            f"{folder}: split {split!r}: {len(missing)} of {count} shards never started "
            f"({sample_keys([shard_dir_name(i, count) for i in missing])}); run them (--num-chunks {count} "
            f"--chunk-idx {','.join(map(str, missing[:8]))}) and merge again"
        )
    check_plans(plans, noun="examples", options=_OPTIONS)
    owner: dict[str, int] = {}
    stored = extra = 0
    for i, plan in sorted(plans.items()):
        index = _index(folder, split, plan)
        keys = [k for c in (index or {}).get("chunks", []) for k in c["keys"]]
        twice = {k for k, n in Counter(keys).items() if n > 1}
        dup = sorted({k for k in keys if k in owner} | twice)
        if dup:
            other = plans[owner[dup[0]]].name if dup[0] in owner else plan.name
            raise MergeError(
                f"split {split!r}: {other} and {plan.name} both stored example(s) {sample_keys(dup)}; "
                f"collect the shards again into a clean folder"
            )
        owner.update((k, i) for k in keys)
        have = set(keys)
        lost = [k for k in plan.units if k not in have]
        if lost:
            raise MergeError(
                f"split {split!r}: {plan.name} has not finished: {len(lost)} planned example(s) "
                f"missing ({sample_keys(lost)}); resume it (the same command, or --num-chunks {count} "
                f"--chunk-idx {i}) and merge again"
            )
        stored += len(keys)
        extra += len(have - set(plan.units))
    return {"shards": count, "examples": stored, "planned": plans[0].total, "extra": extra}


def verify_collect(folder: Path) -> CollectMerge:
    """Verify every split of a sharded collect folder and write ``merged.json``; raises
    :class:`MergeError` naming the shard and keys when something is missing or doubled."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such folder")
    plans = _plans_by_split(folder)
    if not plans:
        raise MergeError(
            f"{folder}: no shard plans (plan-<split>-shard-…-of-….json): this data was collected by "
            f"one process, or by a collect without sharding support, and cannot be verified; "
            f"training reads it as it is"
        )
    result = CollectMerge(folder)
    for split, by_count in sorted(plans.items()):
        result.splits[split] = _verify_split(folder, split, by_count)
    write_json_atomic(folder / MERGED_FILE, {
        "format": "evspec-collect-merge",
        "time": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "splits": result.splits,
    })
    return result
