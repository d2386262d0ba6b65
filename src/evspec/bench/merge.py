"""``evspec merge RUN_DIR``: combine the shard folders of a split benchmark into one run.

Checks, in order, each failing with the shard and keys to fix:

1. every shard ``0..n-1`` of one split size exists and has its plan (``shard.json``);
2. all shards ran the same thing: settings, models, label, the (drafter, γ) list, the
   partition rule and the same dataset (``total`` and ``digest`` of the run's request ids);
3. the plans do not overlap and together cover every request of the run;
4. no record key was written by two shards;
5. every planned measurement (request × drafter × γ) is recorded by its shard (failed
   measurements count as recorded: they are results; ``--retry-failed`` re-runs them).

The merged folder is an ordinary run folder (``records.jsonl``, ``run.json``) that
``evspec report`` reads; records are in the order one process would have written them,
each tagged with its ``shard``.  Records a shard holds beyond its current plan (e.g. a
drafter dropped in a later session) are kept, as a single-process run keeps them.
"""

from __future__ import annotations

import datetime as _dt
import json
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evspec.data.atomic import atomic_write_text
from evspec.data.runlock import check_folder_path, run_lock

from evspec.bench.harness import RUN_SCHEMA
from evspec.bench.records import RECORDS_FILE, RUN_FILE, read_json, read_records, write_json_atomic
from evspec.bench.shard import shard_dir_name, shard_dirs
from evspec.bench.shard_plan import BENCH_PLAN_FILE, ShardPlan

MERGED_DIR = "merged"


class MergeError(ValueError):
    """The shards cannot be merged; the message names the shards and keys."""


@dataclass
class MergeSummary:
    """What :func:`merge_runs` wrote."""

    out: Path
    shards: int
    requests: int
    records: int
    failed: int
    extra: int  # records beyond the shards' current plans (kept)


def sample_keys(keys: list[str] | set[str], n: int = 5) -> str:
    """The first ``n`` of ``keys`` (sorted) for an error message, with how many more."""
    ordered = sorted(keys)
    more = f" … and {len(ordered) - n} more" if len(ordered) > n else ""
    return ", ".join(ordered[:n]) + more


def load_shards(run_dir: Path) -> tuple[int, dict[int, Path]]:
    """``(count, {index: folder})`` of the one complete split under ``run_dir``."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"{run_dir}: no such folder")
    found = shard_dirs(run_dir)
    if not found:
        hint = (f"it is a single-process run: `evspec report {run_dir}` reads it as it is"
                if (run_dir / RUN_FILE).exists() else "was it run with torchrun or --num-chunks?")
        raise MergeError(f"{run_dir}: no shard folders (shard-NNNNN-of-NNNNN) to merge; {hint}")
    if len(found) > 1:
        sizes = ", ".join(f"{c} ({len(v)} folders)" for c, v in sorted(found.items()))
        raise MergeError(
            f"{run_dir} mixes splits of different sizes: {sizes}; keep the folders of one split "
            f"(move the others away) and merge again"
        )
    count, dirs = next(iter(found.items()))
    missing = [i for i in range(count) if i not in dirs]
    if missing:
        names = sample_keys([shard_dir_name(i, count) for i in missing])
        idx = ",".join(str(i) for i in missing[:8])
        raise MergeError(
            f"{run_dir}: {len(missing)} of {count} shards are missing ({names}); run them "
            f"(--num-chunks {count} --chunk-idx {idx}, or the same torchrun launch) and merge again"
        )
    return count, dirs


def _plans(dirs: dict[int, Path]) -> dict[int, ShardPlan]:
    plans: dict[int, ShardPlan] = {}
    for i, folder in sorted(dirs.items()):
        path = folder / BENCH_PLAN_FILE
        if not path.exists():
            raise MergeError(f"{folder.name}: no {BENCH_PLAN_FILE} (the shard never started); run it and merge again")
        plan = ShardPlan.read(path)
        if (plan.index, plan.count) != (i, len(dirs)) or plan.kind != "bench":
            raise MergeError(f"{path}: plan of {plan.kind} shard {plan.name}, but the folder is {folder.name}")
        plans[i] = plan
    return plans


_BENCH_OPTIONS = "settings, models, --drafters, --gamma, --dataset, --split and --limit"


def check_plans(plans: dict[int, ShardPlan], *, noun: str = "requests", options: str = _BENCH_OPTIONS) -> None:
    """Steps 2 and 3: same run everywhere, plans disjoint and complete.  ``noun`` names the
    work units and ``options`` what must agree, in the messages."""
    first = plans[0]
    want = first.consistency()
    for i, plan in plans.items():
        have = plan.consistency()
        diff = [k for k in want if have[k] != want[k]]
        if diff:
            detail = "; ".join(f"{k}: {have[k]!r} vs {want[k]!r}" for k in diff)
            raise MergeError(
                f"{plan.name} ran something else than {first.name} ({detail}); rerun it with the "
                f"same {options}"
            )
    owner: dict[str, int] = {}
    for i, plan in plans.items():
        clash = [u for u in plan.units if u in owner]
        if clash:
            other = owner[clash[0]]
            raise MergeError(
                f"{plans[other].name} and {plan.name} both planned {noun} {sample_keys(clash)}: the "
                f"shards overlap (started with different partitions?); rerun one of them"
            )
        owner.update((u, i) for u in plan.units)
    if len(owner) != first.total:
        raise MergeError(
            f"the shards planned {len(owner)} of the run's {first.total} {noun}: some {noun} "
            f"belong to no shard (corrupted plan?); rerun the shards and merge again"
        )


def collect_records(plans: dict[int, ShardPlan], dirs: dict[int, Path]) -> tuple[list[dict], int]:
    """Steps 4 and 5: the shards' records (latest per key, tagged with ``shard``) in the
    order of one process, and the number of records beyond the plans."""
    seen: dict[str, int] = {}
    position = {u: p for plan in plans.values() for u, p in zip(plan.units, plan.positions)}
    rank = {tuple(r): j for j, r in enumerate(plans[0].runs)}
    merged: list[tuple[tuple[int, int, int, int], dict]] = []
    extra = 0
    for i, plan in sorted(plans.items()):
        path = dirs[i] / RECORDS_FILE
        records = read_records(path) if path.exists() else []
        keys = {r["key"] for r in records}
        dup = sorted(k for k in keys if k in seen)
        if dup:
            raise MergeError(
                f"{plans[seen[dup[0]]].name} and {plan.name} both recorded {len(dup)} measurement(s) "
                f"({sample_keys(dup)}); delete one shard's copy (or that shard) and merge again"
            )
        seen.update((k, i) for k in keys)
        missing = [k for k in plan.expected_keys() if k not in keys]
        if missing:
            raise MergeError(
                f"{plan.name} has not finished: {len(missing)} planned measurement(s) missing "
                f"({sample_keys(missing)}); resume it (the same command, or --num-chunks {plan.count} "
                f"--chunk-idx {plan.index}) and merge again"
            )
        planned = set(plan.expected_keys())
        for n, rec in enumerate(records):
            extra += rec["key"] not in planned
            pos = position.get(rec.get("request_id"), len(position))
            run = rank.get((rec.get("drafter"), rec.get("gamma")), len(rank))
            merged.append(((pos, run, i, n), {**rec, "shard": i}))
    merged.sort(key=lambda pair: pair[0])
    return [rec for _, rec in merged], extra


def _merged_run(run_dir: Path, plans: dict[int, ShardPlan], dirs: dict[int, Path], summary: dict) -> dict:
    runs = {i: read_json(dirs[i] / RUN_FILE) for i in dirs if (dirs[i] / RUN_FILE).exists()}
    if not runs:
        raise MergeError(f"{run_dir}: no shard has a {RUN_FILE}; run the shards first")
    base = runs[min(runs)]
    sessions = [{**s, "shard": i} for i, run in sorted(runs.items()) for s in run.get("sessions", [])]
    return {
        "schema": RUN_SCHEMA,
        "label": base.get("label"),
        "identity": base.get("identity"),
        "backend": base.get("backend"),
        "sessions": sessions,
        "merged": {**summary, "from": str(run_dir.resolve()), "shards": len(plans),
                   "time": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")},
    }


def _write_records(path: Path, records: list[dict]) -> None:
    """Write the merged ``records.jsonl`` atomically (a merge can be repeated safely)."""
    atomic_write_text(path, "".join(json.dumps(rec, allow_nan=False, separators=(",", ":")) + "\n"
                                    for rec in records))


def merge_runs(run_dir: Path, out: Path | None = None) -> MergeSummary:
    """Verify the shards under ``run_dir`` and write the merged run to ``out`` (default
    ``run_dir/merged``); raises :class:`MergeError` naming what is wrong."""
    run_dir = Path(run_dir)
    out = Path(out) if out is not None else run_dir / MERGED_DIR
    if out.resolve() == run_dir.resolve():
        raise MergeError(f"--out {out} is the folder being merged (its shards' parent); writing "
                         f"there would block resuming the shards: choose another --out, e.g. "
                         f"{run_dir / MERGED_DIR}")
    count, dirs = load_shards(run_dir)
    if out.resolve() in {d.resolve() for d in dirs.values()}:
        raise MergeError(f"--out {out} is one of the shard folders; choose another --out")
    check_folder_path(out)
    with ExitStack() as held:  # no shard may be written while it is read
        for folder in dirs.values():
            held.enter_context(run_lock(folder, "merge (reading)"))
        plans = _plans(dirs)
        check_plans(plans)
        records, extra = collect_records(plans, dirs)
        if (out / RUN_FILE).exists() and "merged" not in read_json(out / RUN_FILE):
            raise MergeError(f"{out} holds a benchmark run not made by merge; choose another --out")
        failed = sum(r.get("status") != "ok" for r in records)
        summary: dict[str, Any] = {"requests": plans[0].total, "records": len(records),
                                   "failed": failed, "extra": extra}
        with run_lock(out, "merge"):  # nor is out written by two merges at once
            _write_records(out / RECORDS_FILE, records)
            write_json_atomic(out / RUN_FILE, _merged_run(run_dir, plans, dirs, summary))
    return MergeSummary(out=out, shards=count, requests=plans[0].total, records=len(records),
                        failed=failed, extra=extra)
