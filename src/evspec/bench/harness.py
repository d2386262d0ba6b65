"""The benchmark harness: run every (request, drafter, γ), record one JSON line each.

Phases of :func:`run_bench`:

1. open the run folder: repair a torn last record, check that a resumed run keeps its
   settings, start a new *session* with the environment captured once (``run.json``);
2. plan: per request, target-only (the lossless reference), the HF baselines, then every
   drafter × γ; skip what ``records.jsonl`` already holds (resume);
3. warm up every configuration on the first request(s), untimed and unrecorded, then
   (backends with ``prepare_steps``) capture every step size 1..γ+1 up front, so that no
   CUDA graph capture or compile lands inside a timed round;
4. measure, order-free (DESIGN.md §5): per request the configurations run in a rotated or
   seeded random order (``BenchConfig.order``), and every timed run sees the same cache
   state (``BenchConfig.cache``: ``warm`` = an untimed pass of every configuration on the
   first request of each clip; ``cold`` = the backend's caches cleared before every timed
   run); with ``repeats`` > 1 the order is rotated again for each repeat.  A request's
   records are appended durably once its runs are done (the lossless check needs the
   target-only answer, which may run last).  A failing request (bad clip, out of memory)
   is recorded as failed with its error and the run goes on; Ctrl-C writes the finished
   measurements of the current request and stops, and the same command resumes.

Phases 3 and 4 run a request's configurations through :mod:`evspec.bench.request_runs`.
The harness returns counts; tables and plots are made from the records by ``report``.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm
from evspec.progress import bar_disable

from evspec.bench.backend import BenchBackend
from evspec.bench.config import TARGET_ONLY, BenchConfig, BenchItem
from evspec.bench.env import capture_environment, provenance
from evspec.bench.measure import base_record, failed_record
from evspec.bench.records import RUN_FILE, RecordLog, read_json, record_key, write_json_atomic
from evspec.bench.request_runs import Drafters, RequestRuns, warm_up

RUN_SCHEMA = 1


@dataclass
class BenchOutcome:
    """What a call of :func:`run_bench` did.  ``skipped``: measurements already recorded by
    an earlier session; ``interrupted``: stopped by Ctrl-C (rerun to resume)."""

    run_dir: Path
    session: int
    written: int = 0
    failed: int = 0
    skipped: int = 0
    interrupted: bool = False


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _open_run(run_dir: Path, config: BenchConfig, backend: BenchBackend) -> dict[str, Any]:
    """Load ``run.json`` (checking that a resume keeps the settings) or start one."""
    path = run_dir / RUN_FILE
    identity, describe = config.identity(), backend.describe()
    if not path.exists():
        return {
            "schema": RUN_SCHEMA,
            "label": config.label,
            "identity": identity,
            "backend": describe,
            "sessions": [],
        }
    run = read_json(path)
    for name, want, have in (("settings", identity, run.get("identity")), ("models", describe, run.get("backend"))):
        if have != want:
            diff = {k: (have.get(k) if isinstance(have, dict) else None, v) for k, v in want.items()
                    if not isinstance(have, dict) or have.get(k) != v}
            raise ValueError(
                f"{path}: this run folder was made with other {name} "
                f"(recorded vs requested: {diff}); resume with the same settings or use another --out"
            )
    return run


def run_bench(
    config: BenchConfig,
    items: Sequence[BenchItem],
    backend: BenchBackend,
    out_dir: Path,
    *,
    argv: list[str] | None = None,
    env_extra: dict[str, Any] | None = None,
    progress: bool = True,
    allow_empty: bool = False,
    tag: str | None = None,
) -> BenchOutcome:
    """Measure every item under ``config`` into ``out_dir`` (resuming what is there).

    ``allow_empty``: accept no items (a shard the partition gave nothing) and just record
    the session.  ``tag`` prefixes the progress bar (e.g. the shard).  An item's
    ``meta["position"]`` (its index in the whole, unsharded run) seeds the acceptance-
    controlled pattern and the rotation of the order, so a sharded run measures exactly
    what one process would.
    """
    run_dir = Path(out_dir)
    if not items and not allow_empty:
        raise ValueError("the benchmark has no requests (empty dataset, or --limit 0)")
    ids = [item.request_id for item in items]
    if len(set(ids)) != len(ids):
        dup = sorted({i for i in ids if ids.count(i) > 1})[:3]
        raise ValueError(f"request ids must be unique; repeated: {dup}")

    # -- phase 1: open the run folder -------------------------------------------------
    run_dir.mkdir(parents=True, exist_ok=True)
    run = _open_run(run_dir, config, backend)
    traces = None  # read here once when the run records their source, else on first use
    if config.replay is not None and "replay_source" not in run:
        from evspec.bench.replay import load_traces

        traces = load_traces(config.replay)
        run["replay_source"] = traces.source  # printed with the label
    session = {
        "index": len(run["sessions"]),
        "started": _now(),
        "ended": None,
        "status": "running",
        "config": config.to_dict(),
        "env": capture_environment(argv, extra={"backend": backend.describe(), **(env_extra or {})}),
    }
    run["sessions"].append(session)
    write_json_atomic(run_dir / RUN_FILE, run)
    outcome = BenchOutcome(run_dir=run_dir, session=session["index"])
    prov = provenance(session["env"], backend.describe())

    with RecordLog.open(run_dir) as log:
        if log.repaired_bytes:
            session["repaired_bytes"] = log.repaired_bytes

        # -- phase 2: plan ------------------------------------------------------------
        plan = config.plan()
        todo: list[tuple[int, BenchItem, list[tuple[str, int]]]] = []
        for i, item in enumerate(items):
            index = int(item.meta.get("position", i))  # the request's stream (see docstring)
            pending = [
                run_ for run_ in plan
                if not log.done(record_key(item.request_id, *run_), retry_failed=config.retry_failed)
            ]
            outcome.skipped += len(plan) - len(pending)
            if pending:
                todo.append((index, item, pending))
        total = sum(len(p) for _, _, p in todo)

        drafters = Drafters(backend, config, traces)
        desc = f"bench {tag} ({config.label})" if tag else f"bench ({config.label})"
        bar = tqdm(total=total, desc=desc, unit="run", disable=bar_disable(progress))

        def write(records: list[dict[str, Any]]) -> None:
            for record in records:
                log.append(record)
                outcome.written += 1
                outcome.failed += record["status"] == "failed"
                bar.update(1)

        current: RequestRuns | None = None
        try:
            # -- phase 3: warm up -----------------------------------------------------
            if todo and config.warmup:
                warm_up(backend, drafters, config, todo, bar)

            # -- phase 4: measure -----------------------------------------------------
            warm_clips: set[str] = set()
            for index, item, pending in todo:
                try:
                    request = item.load()
                except Exception as exc:  # a bad clip: every measurement of it fails
                    bases = [base_record(item, name, gamma, config, session["index"], prov)
                             for name, gamma in pending]
                    write([failed_record(base, exc) for base in bases])
                    continue
                ref_rec = log.get(record_key(item.request_id, TARGET_ONLY, 0))
                reference = ref_rec.get("tokens") if ref_rec and ref_rec.get("status") == "ok" else None
                current = RequestRuns(backend, drafters, config, bar, index, item, request, reference)
                clip = item.clip_id or item.request_id
                if config.cache == "warm" and clip not in warm_clips:
                    current.untimed(plan, "warm pass")  # the plan runs target-only first
                    warm_clips.add(clip)
                if config.forced and current.reference is None:
                    current.untimed([(TARGET_ONLY, 0)], "reference pass")
                current.timed(plan, pending)
                write(current.records(session["index"], prov, complete=True))
                current = None
            session["status"] = "complete"
        except KeyboardInterrupt:
            if current is not None:  # keep what this request finished
                write(current.records(session["index"], prov, complete=False))
            outcome.interrupted = True
            session["status"] = "interrupted"
        except BaseException:
            session["status"] = "crashed"
            raise
        finally:
            bar.close()
            session["ended"] = _now()
            session["written"] = outcome.written
            session["failed"] = outcome.failed
            write_json_atomic(run_dir / RUN_FILE, run)
    return outcome
