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

The harness returns counts; tables and plots are made from the records by ``report``.
"""

from __future__ import annotations

import datetime as _dt
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tqdm.auto import tqdm
from evspec.progress import bar_disable

from evspec.bench.backend import BenchBackend
from evspec.bench.config import TARGET_ONLY, BenchConfig, BenchItem
from evspec.bench.env import capture_environment, provenance
from evspec.bench.measure import base_record, compare, failed_record, measure
from evspec.bench.records import RUN_FILE, RecordLog, read_json, record_key, write_json_atomic
from evspec.models.request import Request

if TYPE_CHECKING:
    from evspec.decoding.protocols import Drafter

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


def request_seed(config: BenchConfig, request_id: str) -> int:
    """The sampling seed of a request: the same for every configuration (common random
    numbers), different between requests."""
    return (config.seed + zlib.crc32(request_id.encode())) % 2**31


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


class _Drafters:
    """Drafters built once per name (a build error is remembered and re-raised)."""

    def __init__(self, backend: BenchBackend, config: BenchConfig, traces: Any = None) -> None:
        self.backend, self.config = backend, config
        self._made: dict[str, Drafter | None | Exception] = {}
        self._traces = traces  # the replay traces, read on first use unless given

    def get(self, name: str) -> Drafter | None:
        if name not in self._made:
            try:
                inner = self.backend.make_drafter(name)
                if inner is not None and self.config.controlled_alpha is not None:
                    from evspec.decoding.drafters.controlled import ControlledDrafter

                    inner = ControlledDrafter(
                        inner, self.backend.target, self.config.controlled_alpha, seed=self.config.seed
                    )
                elif inner is not None and self.config.replay is not None:
                    from evspec.bench.replay import ReplayDrafter, load_traces

                    if self._traces is None:
                        self._traces = load_traces(self.config.replay)
                    trace = self._traces.for_drafter(name)
                    inner = ReplayDrafter(inner, self.backend.target, trace)
                self._made[name] = inner
            except Exception as exc:  # recorded per measurement by the caller
                self._made[name] = exc
        made = self._made[name]
        if isinstance(made, Exception):
            raise made
        return made

    def built(self) -> list[Drafter]:
        """The drafters built so far (build errors and target-only left out)."""
        return [d for d in self._made.values() if d is not None and not isinstance(d, Exception)]


def _run_one(
    backend: BenchBackend,
    drafters: _Drafters,
    request: Request,
    name: str,
    gamma: int,
    config: BenchConfig,
    seed: int,
    reference: list[int] | None,
    stream: int,
) -> tuple[dict[str, Any], list[int]]:
    drafter = None
    if name != TARGET_ONLY and gamma > 0:
        drafter = drafters.get(name)
        if hasattr(drafter, "set_reference"):  # acceptance-controlled or -replayed
            if reference is None:
                raise RuntimeError(
                    f"{config.label} run has no reference: the target-only run of this "
                    "request failed"
                )
            if hasattr(drafter, "use_gamma"):  # ReplayDrafter: the trace of this γ
                drafter.use_gamma(gamma)
            drafter.set_reference(reference, stream=stream)
    return measure(backend, request, name, drafter, gamma, config, seed)


def _warm_up(
    backend: BenchBackend,
    drafters: _Drafters,
    config: BenchConfig,
    todo: list[tuple[int, BenchItem, list[tuple[str, int]]]],
    bar: tqdm,
) -> None:
    """Run every pending configuration on the first ``config.warmup`` loadable requests,
    then have the backend make every step size ready (:func:`_prepare_steps`)."""
    runs = list(dict.fromkeys(run for _, _, pending in todo for run in pending))
    if TARGET_ONLY not in {name for name, _ in runs}:
        runs.insert(0, (TARGET_ONLY, 0))  # the controlled mode needs its reference
    warmed = 0
    for index, item, _ in todo:
        if warmed >= config.warmup:
            break
        try:
            request = item.load()
        except Exception:
            continue  # the real run records the failure
        warmed += 1
        reference = None
        seed = request_seed(config, item.request_id)
        for name, gamma in runs:
            bar.set_postfix_str(f"warm-up {name} γ={gamma}")
            try:
                _, tokens = _run_one(backend, drafters, request, name, gamma, config, seed, reference, index)
            except Exception as exc:
                bar.write(f"warm-up of {name} γ={gamma} failed: {type(exc).__name__}: {exc}")
                backend.recover()
                continue
            if name == TARGET_ONLY:
                reference = tokens
        _prepare_steps(backend, config, runs, request, bar, drafters.built())


def _prepare_steps(
    backend: BenchBackend, config: BenchConfig, runs: list[tuple[str, int]], request: Request, bar: tqdm,
    drafters: Sequence[Drafter] = (),
) -> None:
    """Have the backend capture/compile every step size the timed runs may take (a round
    drafting k < γ near an answer's end scores k + 1 tokens: a shape warm-up runs may not
    have used), and so every drafter with its own fixed-shape steps (``prepare_steps``,
    e.g. the draft heads on the fast engine).  Skipped for backends without
    ``prepare_steps`` (test doubles)."""
    prepare = getattr(backend, "prepare_steps", None)
    if not callable(prepare):
        return
    max_gamma = max((gamma for name, gamma in runs if name != TARGET_ONLY), default=0)
    bar.set_postfix_str(f"warm-up: step sizes 1..{max_gamma + 1}")
    try:
        prepare(request, max_gamma=max_gamma, max_new_tokens=config.max_new_tokens)
        for drafter in drafters:
            ready = getattr(drafter, "prepare_steps", None)
            if callable(ready):
                ready(max_gamma)
    except Exception as exc:  # the run goes on; the timed rounds then capture lazily
        bar.write(f"warm-up step capture failed: {type(exc).__name__}: {exc}")
        backend.recover()


def _clear(backend: BenchBackend, drafters: _Drafters) -> None:
    """Cold cache: forget every per-clip cache before a timed run."""
    clear = getattr(backend, "clear_caches", None)
    if not callable(clear):
        raise TypeError(
            f"{type(backend).__name__} has no clear_caches(): it cannot run --cache cold"
        )
    clear(drafters.built())


@dataclass
class _Done:
    """The repeats of one configuration on one request."""

    runs: list[tuple[dict[str, Any], list[int], int]]  # (fields, tokens, position in order)
    error: BaseException | None = None


def _median_run(done: _Done) -> tuple[dict[str, Any], list[int]]:
    """The repeat whose total time is the lower median (a real run, not an average)."""
    ranked = sorted(done.runs, key=lambda run: run[0].get("timings", {}).get("total_ms", 0.0))
    fields, tokens, _ = ranked[(len(ranked) - 1) // 2]
    return fields, tokens


class _Request:
    """Measures one request: untimed warm and reference passes, then every pending
    configuration ``repeats`` times in the configured order."""

    def __init__(
        self, backend: BenchBackend, drafters: _Drafters, config: BenchConfig, bar: tqdm,
        index: int, item: BenchItem, request: Request, reference: list[int] | None,
    ) -> None:
        self.backend, self.drafters, self.config, self.bar = backend, drafters, config, bar
        self.index, self.item, self.request = index, item, request
        self.reference = reference
        self.seed = request_seed(config, item.request_id)
        self.done: dict[tuple[str, int], _Done] = {}
        self.n_plan = 0

    def _run(self, name: str, gamma: int) -> tuple[dict[str, Any], list[int]]:
        return _run_one(self.backend, self.drafters, self.request, name, gamma, self.config,
                        self.seed, self.reference, self.index)

    def untimed(self, runs: list[tuple[str, int]], what: str) -> None:
        """Run ``runs`` once each, unrecorded (a failure is left to the timed run)."""
        for name, gamma in runs:
            if name != TARGET_ONLY and self.config.forced and self.reference is None:
                continue  # no reference yet: the drafter cannot be forced
            self.bar.set_postfix_str(f"{what} {self.item.request_id} {name} γ={gamma}")
            try:
                _, tokens = self._run(name, gamma)
            except Exception as exc:
                self.bar.write(f"{what} of {name} γ={gamma} failed: {type(exc).__name__}: {exc}")
                self.backend.recover()
                continue
            if name == TARGET_ONLY and self.reference is None:
                self.reference = tokens

    def timed(self, plan: list[tuple[str, int]], pending: list[tuple[str, int]]) -> None:
        """Every pending configuration, ``repeats`` times, each repeat in its own order of
        the whole ``plan`` (a resumed request keeps the positions it would have had)."""
        self.n_plan = len(plan)
        for run_ in pending:  # records are written in plan order, whatever order ran
            self.done.setdefault(run_, _Done(runs=[]))
        for repeat in range(self.config.repeats):
            order = self.config.order_for(plan, self.index, self.item.request_id, repeat)
            for position, (name, gamma) in enumerate(order):
                if (name, gamma) not in self.done:
                    continue  # recorded by an earlier session
                done = self.done[(name, gamma)]
                if done.error is not None:
                    continue  # it failed on an earlier repeat
                self.bar.set_postfix_str(f"{self.item.request_id} {name} γ={gamma}")
                try:
                    if self.config.cache == "cold":
                        _clear(self.backend, self.drafters)
                    fields, tokens = self._run(name, gamma)
                except Exception as exc:  # out of memory, bad input, drafter error ...
                    done.error = exc
                    self.backend.recover()
                    continue
                done.runs.append((fields, tokens, position))
                if name == TARGET_ONLY and self.reference is None:
                    self.reference = tokens

    def records(
        self, session: int, prov: dict[str, Any], *, complete: bool
    ) -> list[dict[str, Any]]:
        """One record per configuration measured, in plan order (with ``complete=False``,
        after Ctrl-C: only those whose every repeat ran)."""
        out = []
        for (name, gamma), done in self.done.items():
            base = base_record(self.item, name, gamma, self.config, session, prov)
            if done.error is not None:
                out.append(failed_record(base, done.error))
                continue
            if len(done.runs) < self.config.repeats and not complete:
                continue
            if not done.runs:
                continue
            fields, tokens = _median_run(done)
            ref = None if name == TARGET_ONLY else self.reference
            # every repeat's total beside the kept (lower-median) run's stage times
            totals = [f.get("timings", {}).get("total_ms") for f, _, _ in done.runs]
            timings = {**fields.get("timings", {}), "repeats_total_ms": totals}
            out.append({
                **base, **fields, **compare(tokens, ref), "timings": timings,
                "order": self.config.order, "order_index": self.index,
                "order_position": [p for _, _, p in done.runs],
                "order_size": self.n_plan,
            })
        return out


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

        drafters = _Drafters(backend, config, traces)
        desc = f"bench {tag} ({config.label})" if tag else f"bench ({config.label})"
        bar = tqdm(total=total, desc=desc, unit="run", disable=bar_disable(progress))

        def write(records: list[dict[str, Any]]) -> None:
            for record in records:
                log.append(record)
                outcome.written += 1
                outcome.failed += record["status"] == "failed"
                bar.update(1)

        current: _Request | None = None
        try:
            # -- phase 3: warm up -----------------------------------------------------
            if todo and config.warmup:
                _warm_up(backend, drafters, config, todo, bar)

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
                current = _Request(backend, drafters, config, bar, index, item, request, reference)
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
