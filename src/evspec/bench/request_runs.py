"""The runs of the benchmark's configurations on one request.

:func:`warm_up` (untimed runs on the first requests, then every step size made ready)
and :class:`RequestRuns` (a request's untimed warm and reference passes, then its timed
repeats in the configured order and cache state, kept as one record per configuration).
:func:`evspec.bench.harness.run_bench` drives them over the run folder.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tqdm.auto import tqdm

from evspec.bench.backend import BenchBackend
from evspec.bench.config import TARGET_ONLY, BenchConfig, BenchItem
from evspec.bench.measure import base_record, compare, failed_record, measure
from evspec.models.request import Request

if TYPE_CHECKING:
    from evspec.decoding.protocols import Drafter


def request_seed(config: BenchConfig, request_id: str) -> int:
    """The sampling seed of a request: the same for every configuration (common random
    numbers), different between requests."""
    return (config.seed + zlib.crc32(request_id.encode())) % 2**31


class Drafters:
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
                        inner, self.backend.target, self.config.controlled_alpha,
                        seed=self.config.seed,
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


def run_one(
    backend: BenchBackend,
    drafters: Drafters,
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


def warm_up(
    backend: BenchBackend,
    drafters: Drafters,
    config: BenchConfig,
    todo: list[tuple[int, BenchItem, list[tuple[str, int]]]],
    bar: tqdm,
) -> None:
    """Run every pending configuration on the first ``config.warmup`` loadable requests,
    then have the backend make every step size ready (:func:`prepare_step_sizes`)."""
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
                _, tokens = run_one(backend, drafters, request, name, gamma, config, seed,
                                    reference, index)
            except Exception as exc:
                bar.write(f"warm-up of {name} γ={gamma} failed: {type(exc).__name__}: {exc}")
                backend.recover()
                continue
            if name == TARGET_ONLY:
                reference = tokens
        prepare_step_sizes(backend, config, runs, request, bar, drafters.built())


def prepare_step_sizes(
    backend: BenchBackend, config: BenchConfig, runs: list[tuple[str, int]], request: Request,
    bar: tqdm,
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


def _clear(backend: BenchBackend, drafters: Drafters) -> None:
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


class RequestRuns:
    """Measures one request: untimed warm and reference passes, then every pending
    configuration ``repeats`` times in the configured order."""

    def __init__(
        self, backend: BenchBackend, drafters: Drafters, config: BenchConfig, bar: tqdm,
        index: int, item: BenchItem, request: Request, reference: list[int] | None,
    ) -> None:
        self.backend, self.drafters, self.config, self.bar = backend, drafters, config, bar
        self.index, self.item, self.request = index, item, request
        self.reference = reference
        self.seed = request_seed(config, item.request_id)
        self.done: dict[tuple[str, int], _Done] = {}
        self.n_plan = 0

    def _run(self, name: str, gamma: int) -> tuple[dict[str, Any], list[int]]:
        return run_one(self.backend, self.drafters, self.request, name, gamma, self.config,
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
