"""A shard's plan: the work it must finish, written before it starts.

Every shard of a split run writes its plan (a small JSON file) before doing any work, so
that ``evspec merge`` can tell *missing* work from work that was never asked for, and can
check that all shards ran the same thing:

* ``units``: this shard's work-unit ids (bench: request ids; collect: example keys), in
  the run's order, with their ``positions`` in the whole run (merge restores that order);
* ``total`` and ``digest``: the number of units of the whole run and a hash of their ids
  (every shard saw the same dataset, the same ``--limit``);
* ``identity``: the settings every shard must share (bench: temperature, seed, dataset …
  and the models; collect: the data header);
* ``runs`` (bench): the (drafter, γ) measurements made per request.

A resumed session rewrites the plan (``--drafters`` or ``--limit`` may have grown).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

from evspec.bench.records import RECORDS_FILE, read_json, record_key, write_json_atomic
from evspec.bench.shard import PARTITION_RULE, Shard, ids_digest, partition, shard_dir_name, shard_dirs

PLAN_FORMAT = "evspec-shard-plan"
PLAN_VERSION = 1
#: the plan of a bench shard, inside its ``shard-…-of-…`` folder
BENCH_PLAN_FILE = "shard.json"
_KINDS = ("bench", "collect")


def collect_plan_name(split: str, index: int, count: int) -> str:
    """File name of a collect shard's plan inside the (shared) data folder."""
    return f"plan-{split}-{shard_dir_name(index, count)}.json"


@dataclass(frozen=True)
class ShardPlan:
    """The work of shard ``index`` of ``count`` (see the module docstring)."""

    kind: str
    index: int
    count: int
    units: tuple[str, ...]
    positions: tuple[int, ...]
    total: int
    digest: str
    identity: dict[str, Any] = field(default_factory=dict)
    runs: tuple[tuple[str, int], ...] = ()
    partition: str = PARTITION_RULE

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise ValueError(f"ShardPlan.kind must be one of {_KINDS}, got {self.kind!r}")
        Shard(self.index, self.count)  # validates index/count
        if len(self.units) != len(self.positions):
            raise ValueError("ShardPlan.units and ShardPlan.positions must have the same length")
        if len(set(self.units)) != len(self.units):
            raise ValueError("ShardPlan.units lists an id twice")

    @classmethod
    def build(
        cls,
        kind: str,
        shard: Shard,
        all_ids: Sequence[str],
        mine: Sequence[str],
        identity: dict[str, Any],
        runs: Sequence[tuple[str, int]] = (),
    ) -> ShardPlan:
        """The plan of ``shard`` when the whole run is ``all_ids`` (in order) and this
        shard does ``mine`` (a subset)."""
        where = {unit: i for i, unit in enumerate(all_ids)}
        if len(where) != len(all_ids):
            raise ValueError("the run's work-unit ids must be unique")
        strangers = [u for u in mine if u not in where]
        if strangers:
            raise ValueError(f"shard {shard.name}: units not in the run: {strangers[:5]}")
        return cls(
            kind=kind, index=shard.index, count=shard.count, units=tuple(mine),
            positions=tuple(where[u] for u in mine), total=len(all_ids), digest=ids_digest(all_ids),
            identity=dict(identity), runs=tuple((str(d), int(g)) for d, g in runs),
        )

    @property
    def name(self) -> str:
        return shard_dir_name(self.index, self.count)

    def expected_keys(self) -> list[str]:
        """What the shard must have produced: bench record keys (unit × run), or the units."""
        if self.kind == "bench":
            return [record_key(u, d, g) for u in self.units for d, g in self.runs]
        return list(self.units)

    def consistency(self) -> dict[str, Any]:
        """The fields every shard of one run must share (compared by merge)."""
        return {"partition": self.partition, "count": self.count, "total": self.total,
                "digest": self.digest, "identity": self.identity, "runs": [list(r) for r in self.runs]}

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": PLAN_FORMAT, "version": PLAN_VERSION, "kind": self.kind,
            "index": self.index, "count": self.count, "partition": self.partition,
            "total": self.total, "digest": self.digest, "identity": self.identity,
            "runs": [list(r) for r in self.runs], "units": list(self.units),
            "positions": list(self.positions),
        }

    def write(self, path: Path) -> None:
        """Write atomically (a kill leaves the old plan or the new one)."""
        write_json_atomic(Path(path), self.to_dict())

    @classmethod
    def read(cls, path: Path) -> ShardPlan:
        """Read a plan, naming the file in every error."""
        data = read_json(path)
        if not isinstance(data, dict) or data.get("format") != PLAN_FORMAT:
            raise ValueError(f"{path}: not a shard plan (format {PLAN_FORMAT!r} expected)")
        if data.get("version") != PLAN_VERSION:
            raise ValueError(f"{path}: shard plan version {data.get('version')}, this evspec reads {PLAN_VERSION}")
        try:
            return cls(
                kind=data["kind"], index=int(data["index"]), count=int(data["count"]),
                units=tuple(data["units"]), positions=tuple(int(p) for p in data["positions"]),
                total=int(data["total"]), digest=str(data["digest"]), identity=dict(data["identity"]),
                runs=tuple((str(d), int(g)) for d, g in data.get("runs", [])),
                partition=str(data["partition"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{path}: broken shard plan ({type(exc).__name__}: {exc})") from exc


def write_collect_plan(
    folder: Path,
    split: str,
    shard: Shard,
    all_keys: Sequence[str],
    mine: Sequence[str],
    identity: dict[str, Any],
) -> Path:
    """Record what a ``collect`` shard must produce (call before collecting): ``all_keys`` =
    every example key of ``split`` in order (after ``--limit``), ``mine`` = this shard's,
    ``identity`` = the data header.  Returns the plan's path."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    plan = ShardPlan.build("collect", shard, all_keys, mine, identity)
    path = folder / collect_plan_name(split, shard.index, shard.count)
    plan.write(path)
    return path


class _Keyed(Protocol):
    key: str
    clip_id: str


K = TypeVar("K", bound=_Keyed)


def plan_collect_shard(folder: Path, split: str, items: Sequence[K], shard: Shard, identity: dict[str, Any]) -> list[K]:
    """The one call ``collect`` needs: keep ``shard``'s part of ``items`` (every example of
    ``split`` in order, after ``--limit``; partitioned by clip) and record its plan in
    ``folder`` so that ``evspec merge`` can verify the data; returns this shard's items."""
    mine = partition(items, shard)
    write_collect_plan(folder, split, shard, [it.key for it in items], [it.key for it in mine], identity)
    return mine


def shard_run_dir(out: Path, shard: Shard) -> Path:
    """The bench run folder of ``shard`` under ``out``: ``out`` itself for a single
    process, ``out/shard-{i:05d}-of-{n:05d}`` for a shard.  Refuses to mix layouts (a
    single-process run and shards, or splits of different sizes) in one ``out``."""
    out = Path(out)
    existing = shard_dirs(out)
    if shard.sharded:
        if (out / RECORDS_FILE).exists():
            raise ValueError(
                f"{out} is a single-process run folder (it has {RECORDS_FILE}); write the split "
                f"run into another --out"
            )
        other = sorted(c for c in existing if c != shard.count)
        if other:
            raise ValueError(
                f"{out} already holds a {other[0]}-way split ({shard_dir_name(0, other[0])} …) but this "
                f"process is {shard.name} (shards = WORLD_SIZE × --num-chunks = {shard.count}): launch "
                f"{other[0]} shards to resume that run, or use another --out"
            )
        return out / shard.name
    if existing:
        count = sorted(existing)[0]
        raise ValueError(
            f"{out} holds the shards of a {count}-way split: resume it with the same launch (torchrun "
            f"or --num-chunks {count}), or `evspec merge {out}` and report the merged run; a "
            f"single-process run needs another --out"
        )
    return out


def write_bench_plan(
    run_dir: Path,
    shard: Shard,
    all_ids: Sequence[str],
    mine: Sequence[str],
    identity: dict[str, Any],
    runs: Sequence[tuple[str, int]],
) -> ShardPlan:
    """Write ``run_dir/shard.json`` for a bench shard, refusing a resume whose settings or
    models differ from the recorded plan (the harness would refuse it too, later)."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / BENCH_PLAN_FILE
    plan = ShardPlan.build("bench", shard, all_ids, mine, identity, runs)
    if path.exists():
        old = ShardPlan.read(path)
        if old.identity != plan.identity:
            diff = {k: (old.identity.get(k), v) for k, v in plan.identity.items() if old.identity.get(k) != v}
            raise ValueError(
                f"{path}: this shard was started with other settings or models (recorded vs "
                f"requested: {diff}); resume with the same settings or use another --out"
            )
    plan.write(path)
    return plan
