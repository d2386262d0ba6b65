"""The fast-engine benchmark's context (``Bench``: models, inputs, mode switching) and its
timing helpers; the sections are in ``fast_engine_sections.py``, the driver and the table
in ``fast_engine.py`` (run that one)."""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch

from evspec.models.eventgpt import EventGPT
from evspec.models.request import Request
from evspec.models.target import VideoLlavaTarget

QUESTIONS = (
    "What is moving here?",  # ~20 characters: a 2091-token 7B prompt with the stand-in vocab
    "Which way does it go?",
    "How fast is the car?",
    "What colour is it?",
)
SECTIONS = (
    "correctness", "hf", "hf_static", "dynamic", "fast_eager", "fast_graphs",
    "eventgpt", "prefill", "e2e", "overlap", "variants",
)
#: enable_fast options per mode (graphs default to on on CUDA; the rest are the defaults)
MODES: dict[str, dict[str, Any]] = {
    "fast_eager": {"cuda_graphs": False},
    "fast_graphs": {},
    "unfused": {"fuse": False, "prefill_buckets": ()},
    "fused": {"fuse": True},
    "compiled": {"compile": True},
    "compiled_steps": {"compile": True, "compile_prefill": False},
    "triton": {"kernels": "triton", "compile": True},  # Triton layer kernels for steps, compiled prefills
}
#: variants of the variants section -> mode; ``compiled_steps`` (steps compiled, prefills
#: eager) is not in the default list: it isolates a failing or slow prefill compile;
#: ``compiled_splitkv`` = ``compiled`` with split-KV attention for every step; ``triton`` = the
#: Triton layer kernels with split-KV attention for steps (prefills compiled)
VARIANTS = {"unfused": "unfused", "fused": "fused", "compiled": "compiled", "compiled_steps": "compiled_steps",
            "compiled_splitkv": "compiled@splitkv", "triton": "triton@splitkv"}
DEFAULT_VARIANTS = ("unfused", "fused", "compiled")
DTYPES = {"bfloat16": torch.bfloat16, "bf16": torch.bfloat16, "float16": torch.float16,
          "float32": torch.float32, "fp32": torch.float32}


# -- context and helpers ---------------------------------------------------------------------


@dataclass
class Bench:
    args: argparse.Namespace
    device: torch.device
    target: VideoLlavaTarget
    eventgpt: EventGPT
    video: np.ndarray
    events: np.ndarray
    modes: dict[int, str] = field(default_factory=dict)
    ref_token: int = 0

    def request(self, i: int = 0, clip: str | None = None) -> Request:
        return Request(QUESTIONS[i % len(QUESTIONS)], video=self.video, event_images=self.events,
                       clip_id=clip)

    def mode(self, model: Any, mode: str, *, prefix: bool = False) -> None:
        """Put ``model`` on ``dynamic`` or one of :data:`MODES` (``fast_eager``,
        ``fast_graphs``, ``unfused``, ``fused``, ``compiled``), optionally ``@sdpa`` / ``@matmul``
        (attention kernel; default ``--attention``); ``fast_graphs`` means ``--fast-mode``
        (the fused graphs, or the compiled variant); re-enabling only on change: captured
        graphs survive between sections."""
        if mode.startswith("fast_graphs") and self.args.fast_mode != "fast_graphs":
            mode = self.args.fast_mode + mode.removeprefix("fast_graphs")  # --fast-mode compiled
        if "@" not in mode and mode != "dynamic":
            mode = f"{mode}@{self.args.attention}"
        want = f"{mode}+prefix" if prefix else mode
        if self.modes.get(id(model)) == want:
            return
        model.disable_prefix_cache()
        if self.modes.get(id(model), "dynamic").split("+")[0] != mode:
            model.disable_fast()
            base, _, attention = mode.partition("@")
            if base != "dynamic":
                model.enable_fast(**{"max_score_tokens": max(self.score_sizes), "attention": attention,
                                     **self.mode_options(base)})
        if prefix:
            model.enable_prefix_cache(max_clips=2)
        self.modes[id(model)] = want

    def mode_options(self, base: str) -> dict[str, Any]:
        if base not in MODES:
            raise ValueError(f"unknown mode {base!r}; choose dynamic or one of {', '.join(MODES)}")
        opts = dict(MODES[base])
        if opts.get("compile"):
            # compile_buckets: powers of two up to 16 (also the size the question after a
            # cached prefix pads to) and every timed score size, unpadded (a score of 9
            # padded to 16 rows spends ~0.1 ms more in attention)
            opts["max_score_tokens"] = max(16, *self.score_sizes)
            opts["score_sizes"] = tuple(self.score_sizes)
            opts["compile_mode"] = self.args.compile_mode if self.device.type == "cuda" else None
        return opts

    @property
    def score_sizes(self) -> list[int]:
        return [g + 1 for g in self.args.gammas]

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


def timed_ms(bench: Bench, fn: Callable[[], Any]) -> tuple[float, Any]:
    bench.sync()
    t0 = time.perf_counter()
    out = fn()
    bench.sync()
    return (time.perf_counter() - t0) * 1e3, out


def median_ms(bench: Bench, fn: Callable[[], Any], repeats: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    return statistics.median(timed_ms(bench, fn)[0] for _ in range(repeats))


#: decode steps in one timed greedy chain (``chain_ms_per_token``)
CHAIN_STEPS = 64


def step_ms(bench: Bench, model: Any, req: Request, sizes: list[int]) -> dict[str, float]:
    """Median ms of one ``score`` of T tokens at the end of the prompt (rolled back after
    each call, so every call sees the same position) for each T in ``sizes``; with T = 1
    on a model that can chain, also ``chain_ms_per_token``: :data:`CHAIN_STEPS` greedy
    decode steps fed on the device (``greedy_chain``, what target-only ``generate`` runs),
    one synchronisation at the end, per token."""
    state = model.prefill(req)
    tok = int(state.last_logits.argmax())
    out: dict[str, float] = {"position": float(state.length)}
    for t in sizes:
        feed = torch.full((t,), tok, dtype=torch.long)

        def call() -> None:
            model.score(state, feed)
            model.rollback(state, t)

        out[f"T{t}_ms"] = median_ms(bench, call, bench.args.repeats, warmup=3)
    if 1 in sizes and getattr(model, "can_chain", lambda s: False)(state):
        n = CHAIN_STEPS

        def chain() -> None:  # greedy decoding with the tokens on the device (decoding.chain)
            model.greedy_chain(state, n, tok)
            model.rollback(state, n)

        out["chain_ms_per_token"] = median_ms(bench, chain, bench.args.repeats, warmup=2) / n
    if hasattr(model, "release"):
        model.release(state)
    return out


def fast_stats(model: Any) -> dict[str, Any]:
    return dict(model.fast.stats) if model.fast is not None else {}


def match_rate(a: list[int], b: list[int]) -> dict[str, Any]:
    n = min(len(a), len(b))
    same = sum(x == y for x, y in zip(a, b))
    first = next((i for i in range(n) if a[i] != b[i]), None)
    return {"match_rate": same / max(len(a), len(b), 1), "first_divergence": first,
            "lengths": [len(a), len(b)]}


# -- sections --------------------------------------------------------------------------------
