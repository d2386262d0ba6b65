"""What a benchmark run measures: the typed configuration and the unit of work."""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from evspec.models.request import Request

#: Pseudo-drafter names of the baselines (DESIGN.md §5).
TARGET_ONLY = "none"  # evspec's engine with no drafter (the lossless reference)
HF_GENERATE = "hf-generate"  # transformers ``generate`` on the target: what users do today
HF_STATIC = "hf-static"  # ``generate`` with a static cache (transformers compiles it on CUDA)
HF_PROMPT_LOOKUP = "hf-prompt-lookup"  # transformers assisted generation by prompt lookup
#: ``--hf-baselines`` names -> the pseudo-drafter each adds to the plan
HF_BASELINES = {"eager": HF_GENERATE, "static": HF_STATIC, "prompt-lookup": HF_PROMPT_LOOKUP}
#: in what order a request's configurations run (``BenchConfig.order``)
ORDERS = ("rotate", "random")
#: the cache state every timed run sees (``BenchConfig.cache``)
CACHES = ("warm", "cold")
#: how a drafter's work is scheduled against the target's (``docs/two_gpu.md``)
SCHEDULES = ("sequential", "pipelined")


@dataclass(frozen=True)
class BenchConfig:
    """One benchmark run.

    ``drafters``: drafter names (``make_drafter`` names; ``none`` is the target-only
    baseline, which always runs because it is the reference for the lossless check).
    ``gammas``: draft lengths γ tried for every drafter.  ``warmup``: requests run untimed
    and unrecorded for every configuration before measuring.  ``hf_baseline``: also time
    transformers ``generate``.  ``controlled_alpha``: acceptance-controlled mode (greedy
    only): drafts are replaced by the target's own continuation with this probability per
    token.  ``retry_failed``: re-run measurements recorded as failed.  ``dataset``: the
    dataset spec, recorded so that a resumed run cannot silently switch datasets.
    ``schedule``: ``sequential`` (``engine.generate``) or ``pipelined``
    (``decoding.pipeline.generate_pipelined``: the drafter drafts the next block while the
    target scores, on its own thread/stream/device); a resumed run keeps it.

    Fairness (DESIGN.md §5): ``order`` is how a request's configurations are ordered:
    ``rotate`` (request i starts at configuration i mod n, so every configuration runs at
    every position equally often) or ``random`` (a permutation seeded by ``seed`` and the
    request id); the order is recorded in every record.  ``cache``: ``warm`` runs every
    configuration once, untimed, on the first request of each clip before any timed run of
    that clip (every timed run then finds the clip's prefix and event memory cached);
    ``cold`` clears the backend's caches before every timed run (every run pays the
    clip's preprocessing, vision and full prefill).  ``repeats``: each configuration runs
    this many times per request (the order re-rotated each time); the record keeps the
    lower-median run and every repeat's total.  ``hf_baselines``: transformers baselines
    (``eager``, ``static``, ``prompt-lookup``; empty = none; ``hf_baseline=False`` is the
    same as empty).  ``replay``: an acceptance-trace file (``evspec.bench.replay``): each
    drafter's recorded per-round acceptance is replayed on these models (greedy only).
    """

    drafters: tuple[str, ...] = (TARGET_ONLY,)
    gammas: tuple[int, ...] = (4,)
    temperature: float = 0.0
    top_p: float = 1.0
    max_new_tokens: int = 128
    seed: int = 0
    warmup: int = 1
    hf_baseline: bool = True
    controlled_alpha: float | None = None
    retry_failed: bool = False
    dataset: str = ""
    schedule: str = "sequential"
    order: str = "rotate"
    cache: str = "warm"
    repeats: int = 1
    hf_baselines: tuple[str, ...] = ("eager",)
    replay: str | None = None

    def __post_init__(self) -> None:
        if not self.drafters:
            raise ValueError("BenchConfig.drafters is empty: pass e.g. --drafters none,prompt-lookup")
        for name in self.drafters:
            if not name or "|" in name or name != name.strip() or name == HF_GENERATE:
                raise ValueError(
                    f"BenchConfig.drafters: bad drafter name {name!r} (names are non-empty, "
                    f"without '|' or spaces; {HF_GENERATE!r} is set by --hf-baseline)"
                )
        if len(set(self.drafters)) != len(self.drafters):
            raise ValueError(f"BenchConfig.drafters lists a name twice: {self.drafters}")
        if not self.gammas or any(
            isinstance(g, bool) or not isinstance(g, int) or g < 1 for g in self.gammas
        ):
            raise ValueError(f"BenchConfig.gammas must be integers >= 1, e.g. 1,2,4,8; got {self.gammas}")
        if len(set(self.gammas)) != len(self.gammas):
            raise ValueError(f"BenchConfig.gammas lists a value twice: {self.gammas}")
        if not math.isfinite(self.temperature) or self.temperature < 0:
            raise ValueError(f"BenchConfig.temperature must be >= 0 (0 = greedy), got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"BenchConfig.top_p must be in (0, 1], got {self.top_p}")
        if self.max_new_tokens < 1:
            raise ValueError(f"BenchConfig.max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.warmup < 0:
            raise ValueError(f"BenchConfig.warmup must be >= 0 requests, got {self.warmup}")
        if self.schedule not in SCHEDULES:
            raise ValueError(
                f"BenchConfig.schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}"
            )
        if self.order not in ORDERS:
            raise ValueError(
                f"BenchConfig.order must be one of {', '.join(ORDERS)}, got {self.order!r}"
            )
        if self.cache not in CACHES:
            raise ValueError(
                f"BenchConfig.cache must be one of {', '.join(CACHES)}, got {self.cache!r}"
            )
        if isinstance(self.repeats, bool) or not isinstance(self.repeats, int) or self.repeats < 1:
            raise ValueError(f"BenchConfig.repeats must be an integer >= 1, got {self.repeats!r}")
        unknown = [n for n in self.hf_baselines if n not in HF_BASELINES]
        if unknown or len(set(self.hf_baselines)) != len(self.hf_baselines):
            raise ValueError(
                f"BenchConfig.hf_baselines: each of {', '.join(HF_BASELINES)} at most once; "
                f"got {self.hf_baselines}"
            )
        if self.replay is not None:
            if self.controlled_alpha is not None:
                raise ValueError("BenchConfig: give either controlled_alpha or replay, not both")
            if self.temperature != 0:
                raise ValueError("BenchConfig.replay needs greedy decoding (temperature 0)")
            if self.schedule != "sequential":  # pre-drafts that are thrown away would use up rounds
                raise ValueError("BenchConfig.replay needs the sequential schedule")
        if self.controlled_alpha is not None:
            a = self.controlled_alpha
            if not (isinstance(a, int | float) and 0.0 <= a <= 1.0):
                raise ValueError(f"BenchConfig.controlled_alpha must be in [0, 1], got {a}")
            if self.temperature != 0:
                raise ValueError(
                    "BenchConfig.controlled_alpha needs greedy decoding (temperature 0): the "
                    "drafts are replaced by the target's greedy continuation"
                )

    @property
    def label(self) -> str:
        """``acceptance-controlled``, ``acceptance-replayed`` or ``measured``: printed on
        every report."""
        if self.controlled_alpha is not None:
            return "acceptance-controlled"
        return "acceptance-replayed" if self.replay is not None else "measured"

    @property
    def forced(self) -> bool:
        """Whether drafts are forced against the target-only answer (controlled, replayed)."""
        return self.controlled_alpha is not None or self.replay is not None

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    def to_dict(self) -> dict:
        return asdict(self)

    def identity(self) -> dict:
        """The settings a resumed run must share with the original one (others, like the
        drafter and γ lists, may grow between sessions)."""
        ident = {
            k: getattr(self, k)
            for k in ("temperature", "top_p", "max_new_tokens", "seed", "controlled_alpha", "dataset")
        }
        if self.schedule != "sequential":  # absent when sequential: older run folders still resume
            ident["schedule"] = self.schedule
        # the fairness settings change every timing: a resumed run keeps them
        ident.update(order=self.order, cache=self.cache, repeats=self.repeats)
        if self.replay is not None:
            ident["replay"] = self.replay
        return ident

    def plan(self) -> list[tuple[str, int]]:
        """The configurations measured for every request: target-only (the lossless
        reference), the HF baselines, then each drafter × γ.  Baselines have γ = 0.  The
        order they *run* in is :meth:`order_for`'s."""
        runs: list[tuple[str, int]] = [(TARGET_ONLY, 0)]
        if self.hf_baseline:
            runs += [(HF_BASELINES[n], 0) for n in self.hf_baselines]
        runs += [(d, g) for d in self.drafters if d != TARGET_ONLY for g in self.gammas]
        return runs

    def order_for(self, runs: list[tuple[str, int]], index: int, request_id: str,
                  repeat: int = 0) -> list[tuple[str, int]]:
        """``runs`` in the order request number ``index`` (its position in the whole run)
        measures them on repeat ``repeat``: rotated by ``index + repeat`` (``rotate``) or
        shuffled by a generator seeded with (seed, request id, repeat) (``random``)."""
        if not runs:
            return []
        if self.order == "rotate":
            shift = (index + repeat) % len(runs)
            return runs[shift:] + runs[:shift]
        rng = random.Random(f"{self.seed}|{request_id}|{repeat}")
        out = list(runs)
        rng.shuffle(out)
        return out


@dataclass
class BenchItem:
    """One request of the benchmark, loaded lazily so that a bad clip fails inside the run
    (recorded as failed) instead of before it.

    ``request_id`` is stable across runs (it keys resume); ``clip_id``, ``qtype`` and
    ``question`` are recorded even when loading fails.
    """

    request_id: str
    load: Callable[[], Request]
    clip_id: str | None = None
    qtype: str | None = None
    question: str | None = None
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.request_id or "|" in self.request_id:
            raise ValueError(f"BenchItem.request_id must be non-empty without '|': {self.request_id!r}")
