"""Fast-engine benchmark (issue 6): HF eager / HF static / our dynamic path / fast path
(eager, CUDA graphs, fused, compiled) at real 7B shapes, prefix cache, end-to-end, overlap.

Run on one GPU (the lead runs it on an H200)::

    PYTHONPATH=src python3 benchmarks/fast_engine.py                       # 7b, bf16, cuda
    PYTHONPATH=src python3 benchmarks/fast_engine.py --skip hf_static --variants unfused,fused
    PYTHONPATH=src python3 benchmarks/fast_engine.py --preset tiny-random --device cpu --dtype float32

Weights are random (the presets' exact shapes): timing does not depend on weight values,
but the text is meaningless.  Sections (``--sections`` / ``--skip``, comma lists):

``fast_*`` below run ``enable_fast`` defaults: on CUDA fused q/k/v and gate/up weights,
graphs, padded question prefill after a cached prefix; ``unfused`` is the first
measurement's configuration (HF modules per layer, eager question prefill).

``correctness``  greedy tokens of the fast path (graphs) vs the dynamic path, target-only
                 and self-drafting, and prefix-cache hit vs none: token match rates
                 (bf16 batched vs incremental passes may round differently: reported,
                 not asserted)
``hf``           HF ``generate`` eager: ms/token = (t(N) - t(1)) / (N - 1)
``hf_static``    the same with ``cache_implementation="static"`` (transformers compiles
                 the forward on the first call: that call's time is reported as warm-up)
``dynamic``      our default path: one decode step (score of 1 token) at the prompt end
``fast_eager``   the fast path without CUDA graphs: decode step
``fast_graphs``  the fast path with CUDA graphs: decode step and score steps of
                 γ + 1 = 2, 3, 5, 9 tokens (ratio to one decode step)
``eventgpt``     EventGPT-7B decode step, dynamic, unfused and fast (graphs)
``prefill``      target prefill of the ~2091-token prompt: dynamic, fast, and with the
                 prefix cache: first question on a clip (miss) and a second one (hit)
``e2e``          128 new tokens target-only through the engine (fast + graphs) vs HF
                 eager ``generate``: total ms and speedup; also with a prefix hit
``overlap``      EventGPT prefill on a second CUDA stream concurrently with the target's
                 prefill vs one after the other
``variants``     side by side, graphs on: ``unfused`` / ``fused`` / ``compiled`` (fused +
                 the per-layer functions compiled for steps and prefills,
                 ``--compile-mode``; ``compiled_steps``: prefills eager); each is first
                 checked against ``unfused`` (greedy token match rate in bf16, max |logit|
                 difference after prefill and after one decode step), then timed: decode
                 and score-9 steps, full prefill, prefix-hit prefill; compile time.
                 ``--variants`` picks them; one failing variant does not stop the others

Every step time is the median over ``--repeats`` calls, each bracketed by device
synchronisation, after warm-up.  Peak GPU memory per section, graph capture and compile
times are recorded.  A failing section records its error and the run continues.  Prints
a markdown table; writes JSON to ``--json`` or ``$OUT/fast_engine.json`` when ``OUT`` is set.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from evspec.bench.env import capture_environment
from evspec.decoding.drafters import ModelDrafter
from evspec.decoding.engine import generate
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
}
#: variants of the variants section -> mode; ``compiled_steps`` (steps compiled, prefills
#: eager) is not in the default list: it isolates a failing or slow prefill compile
VARIANTS = {"unfused": "unfused", "fused": "fused", "compiled": "compiled", "compiled_steps": "compiled_steps"}
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
        (attention kernel; default ``--attention``), re-enabling only on change: captured
        graphs survive between sections."""
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
        if base.startswith("compiled"):
            # few buckets = few compiles; a score of 9 pads to 16, the size the question
            # after a cached prefix pads to as well (one compiled shape for both)
            top = max(16, *self.score_sizes)
            opts["buckets"] = (1, 2, 4, 8, 16) + ((top,) if top > 16 else ())
            opts["max_score_tokens"] = top
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


def step_ms(bench: Bench, model: Any, req: Request, sizes: list[int]) -> dict[str, float]:
    """Median ms of one ``score`` of T tokens at the end of the prompt (rolled back after
    each call, so every call sees the same position) for each T in ``sizes``."""
    state = model.prefill(req)
    tok = int(state.last_logits.argmax())
    out: dict[str, float] = {"position": float(state.length)}
    for t in sizes:
        feed = torch.full((t,), tok, dtype=torch.long)

        def call() -> None:
            model.score(state, feed)
            model.rollback(state, t)

        out[f"T{t}_ms"] = median_ms(bench, call, bench.args.repeats, warmup=3)
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


def sec_correctness(b: Bench) -> dict[str, Any]:
    n = b.args.check_tokens
    out: dict[str, Any] = {}
    for i in range(b.args.check_requests):
        req = b.request(i)
        b.mode(b.target, "dynamic")
        ref = generate(b.target, req, None, max_new_tokens=n).tokens
        b.mode(b.target, "fast_graphs")
        fast = generate(b.target, req, None, max_new_tokens=n).tokens
        selfd = generate(b.target, req, ModelDrafter(b.target, name="self"), gamma=4, max_new_tokens=n).tokens
        b.mode(b.target, "fast_graphs", prefix=True)
        generate(b.target, b.request(i + 1, clip="check"), None, max_new_tokens=2)  # fills the prefix
        hit = generate(b.target, b.request(i, clip="check"), None, max_new_tokens=n)
        out[f"request{i}"] = {
            "fast_vs_dynamic": match_rate(ref, fast),
            "self_draft_vs_fast": match_rate(fast, selfd),
            "prefix_hit_vs_fast": match_rate(fast, hit.tokens),
        }
    rates = [v[k]["match_rate"] for v in out.values() for k in v]
    out["min_match_rate"] = min(rates)
    return out


def _hf_ms_per_token(b: Bench, cache_impl: str | None) -> dict[str, Any]:
    n = b.args.hf_tokens
    req = b.request(0)
    warm_ms = timed_ms(b, lambda: b.target.hf_generate(req, n, cache_implementation=cache_impl))[0]
    full, one, counts = [], [], []
    for _ in range(b.args.hf_repeats):
        toks, ms = b.target.hf_generate(req, n, cache_implementation=cache_impl)
        full.append(ms)
        counts.append(len(toks))
        one.append(b.target.hf_generate(req, 1, cache_implementation=cache_impl)[1])
    tokens = min(counts)
    return {"warmup_ms": warm_ms, "total_ms": statistics.median(full), "first_token_ms": statistics.median(one),
            "new_tokens": tokens,
            "ms_per_token": (statistics.median(full) - statistics.median(one)) / max(tokens - 1, 1)}


def sec_hf(b: Bench) -> dict[str, Any]:
    b.mode(b.target, "dynamic")
    return _hf_ms_per_token(b, None)


def sec_hf_static(b: Bench) -> dict[str, Any]:
    if b.device.type != "cuda":
        return {"skipped": "HF static cache compiles the forward: CUDA only here"}
    b.mode(b.target, "dynamic")
    return _hf_ms_per_token(b, "static")


def sec_dynamic(b: Bench) -> dict[str, Any]:
    b.mode(b.target, "dynamic")
    return step_ms(b, b.target, b.request(0), [1])


def sec_fast_eager(b: Bench) -> dict[str, Any]:
    b.mode(b.target, "fast_eager")
    return {**step_ms(b, b.target, b.request(0), [1]), "fast": fast_stats(b.target)}


def sec_fast_graphs(b: Bench) -> dict[str, Any]:
    """Decode and score steps with graphs, for both attention kernels (the chosen
    ``--attention`` first; the other under ``other_attention``)."""
    out: dict[str, Any] = {}
    other = "matmul" if b.args.attention == "sdpa" else "sdpa"
    for attention in (b.args.attention, other):
        b.mode(b.target, f"fast_graphs@{attention}")
        res = step_ms(b, b.target, b.request(0), [1, *b.score_sizes])
        for t in b.score_sizes:
            res[f"T{t}_over_decode"] = res[f"T{t}_ms"] / res["T1_ms"]
        res["fast"] = fast_stats(b.target)
        if attention == b.args.attention:
            out.update(res)
        else:
            out["other_attention"] = {"attention": attention, **res}
    return out


def sec_eventgpt(b: Bench) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for mode in ("dynamic", "unfused", "fast_graphs"):
        b.mode(b.eventgpt, mode)
        out[mode] = step_ms(b, b.eventgpt, b.request(0), [1] if mode == "dynamic" else [1, 5])
    out["fast"] = fast_stats(b.eventgpt)
    b.mode(b.eventgpt, "dynamic")
    return out


def sec_prefill(b: Bench) -> dict[str, Any]:
    out: dict[str, Any] = {}
    reps = b.args.repeats

    def prefill_times(clip: Callable[[int], str | None], q: int = 0) -> dict[str, float]:
        rows = []
        for r in range(reps + 1):
            state = b.target.prefill(b.request(q, clip=clip(r)))
            rows.append(dict(state.timings))
            b.target.release(state)
            del state
        rows = rows[1:]  # the first is warm-up
        keys = ("preprocess_ms", "vision_ms", "prefill_ms")
        return {k: statistics.median(r.get(k, 0.0) for r in rows) for k in keys}

    for mode in ("dynamic", "fast_graphs"):
        b.mode(b.target, mode)
        out[mode] = prefill_times(lambda r: None)
        out[mode]["prompt_tokens"] = int(b.target.build_prompt_ids(QUESTIONS[0]).numel())
    b.mode(b.target, "fast_graphs", prefix=True)
    out["fast_prefix_miss"] = prefill_times(lambda r: f"miss-{r}")  # a new clip every time
    b.target.prefill(b.request(1, clip="hit"))  # the clip's first question
    out["fast_prefix_hit"] = prefill_times(lambda r: "hit", q=0)  # its second question
    return out


def sec_e2e(b: Bench) -> dict[str, Any]:
    n = b.args.e2e_tokens
    req = b.request(0)
    b.mode(b.target, "dynamic")
    hf = [b.target.hf_generate(req, n)[1] for _ in range(b.args.hf_repeats)]
    dyn = generate(b.target, req, None, max_new_tokens=n)
    b.mode(b.target, "fast_graphs")
    generate(b.target, req, None, max_new_tokens=n)  # warm-up (graph capture)
    runs = [generate(b.target, req, None, max_new_tokens=n) for _ in range(b.args.hf_repeats)]
    fast_ms = statistics.median(r.stats.total_ms for r in runs)
    b.mode(b.target, "fast_graphs", prefix=True)
    generate(b.target, b.request(1, clip="e2e"), None, max_new_tokens=2)
    hits = [generate(b.target, b.request(0, clip="e2e"), None, max_new_tokens=n)
            for _ in range(b.args.hf_repeats)]
    hit_ms = statistics.median(r.stats.total_ms for r in hits)
    hf_ms = statistics.median(hf)
    decode = runs[0].stats
    return {
        "new_tokens": decode.new_tokens,
        "hf_new_tokens": n,
        "hf_eager_total_ms": hf_ms,
        "dynamic_total_ms": dyn.stats.total_ms,
        "fast_total_ms": fast_ms,
        "fast_prefix_hit_total_ms": hit_ms,
        "fast_decode_ms_per_token": decode.decode_ms / max(decode.new_tokens - 1, 1),
        "speedup_vs_hf": hf_ms / fast_ms,
        "speedup_vs_hf_prefix_hit": hf_ms / hit_ms,
    }


def sec_overlap(b: Bench) -> dict[str, Any]:
    if b.device.type != "cuda":
        return {"skipped": "needs CUDA streams"}
    b.mode(b.target, "fast_graphs")
    b.mode(b.eventgpt, "fast_graphs")
    req = b.request(0)

    def sequential() -> None:
        s1 = b.target.prefill(req)
        s2 = b.eventgpt.prefill(req)
        b.target.release(s1), b.eventgpt.release(s2)

    def overlapped() -> None:
        streams = [torch.cuda.Stream(b.device), torch.cuda.Stream(b.device)]
        for s in streams:
            s.wait_stream(torch.cuda.current_stream(b.device))
        errors: list[BaseException] = []

        def run(model: Any, stream: torch.cuda.Stream) -> None:
            try:
                with torch.cuda.stream(stream):
                    model.release(model.prefill(req))
            except BaseException as exc:  # re-raised in the main thread
                errors.append(exc)

        threads = [threading.Thread(target=run, args=(m, s))
                   for m, s in ((b.target, streams[0]), (b.eventgpt, streams[1]))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for s in streams:
            torch.cuda.current_stream(b.device).wait_stream(s)
        if errors:
            raise errors[0]

    seq = median_ms(b, sequential, b.args.repeats)
    ovl = median_ms(b, overlapped, b.args.repeats)
    return {"sequential_ms": seq, "overlapped_ms": ovl, "gain": seq / ovl,
            "keep": "overlap" if ovl < seq * 0.97 else "sequential"}


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float().cpu() - b.float().cpu()).abs().max())


def _probe(b: Bench, mode: str) -> dict[str, Any]:
    """Greedy tokens, prefill logits and one decode step's logits of ``mode`` on the
    first request (the step is fed the same token for every mode)."""
    b.mode(b.target, mode)
    t0 = time.perf_counter()
    state = b.target.prefill(b.request(0))
    prefill_logits = state.last_logits.clone()
    step_logits = b.target.score(state, torch.tensor([int(b.ref_token)])).logits[0].clone()
    b.target.release(state)
    first_s = time.perf_counter() - t0  # includes compile + capture of the decode step
    tokens = generate(b.target, b.request(0), None, max_new_tokens=b.args.check_tokens).tokens
    return {"tokens": tokens, "prefill_logits": prefill_logits, "step_logits": step_logits,
            "first_step_s": first_s}


def _time_variant(b: Bench, mode: str) -> dict[str, Any]:
    sizes = [1, b.score_sizes[-1]]
    out: dict[str, Any] = step_ms(b, b.target, b.request(0), sizes)
    out[f"T{sizes[-1]}_over_decode"] = out[f"T{sizes[-1]}_ms"] / out["T1_ms"]
    reps = b.args.repeats
    full = []
    for _ in range(reps + 1):
        state = b.target.prefill(b.request(0))
        full.append(state.timings["prefill_ms"])
        b.target.release(state)
    out["prefill_ms"] = statistics.median(full[1:])
    b.mode(b.target, mode, prefix=True)
    b.target.release(b.target.prefill(b.request(1, clip="variant")))  # the clip's first question
    hits = []
    for _ in range(reps + 1):
        state = b.target.prefill(b.request(0, clip="variant"))
        assert state.timings.get("prefix_hit"), "the variant's second question missed the prefix cache"
        hits.append(state.timings["prefill_ms"])
        b.target.release(state)
    out["prefix_hit_prefill_ms"] = statistics.median(hits[1:])
    out["fast"] = fast_stats(b.target)
    return out


def sec_variants(b: Bench) -> dict[str, Any]:
    """``unfused`` / ``fused`` / ``compiled`` side by side (module docstring).  The
    reference for the checks is ``unfused``, run first."""
    out: dict[str, Any] = {}
    b.mode(b.target, "unfused")
    state = b.target.prefill(b.request(0))
    b.ref_token = int(state.last_logits.argmax())
    b.target.release(state)
    del state
    ref: dict[str, Any] | None = None
    for name in b.args.variants:
        mode = VARIANTS[name]
        try:
            probe = _probe(b, mode)
            if ref is None:
                if name != "unfused":
                    raise RuntimeError("the first variant must be unfused (the reference)")
                ref = probe
            res: dict[str, Any] = {
                "vs_unfused": {
                    **match_rate(ref["tokens"], probe["tokens"]),
                    "prefill_logits_max_diff": _max_diff(ref["prefill_logits"], probe["prefill_logits"]),
                    "step_logits_max_diff": _max_diff(ref["step_logits"], probe["step_logits"]),
                    "same_argmax_after_step": int(ref["step_logits"].argmax()) == int(probe["step_logits"].argmax()),
                },
                "first_step_s": probe["first_step_s"],
            }
            res.update(_time_variant(b, mode))
        except Exception as exc:  # one variant failing keeps the others
            res = {"error": f"{type(exc).__name__}: {exc}",
                   "traceback": traceback.format_exc().splitlines()[-8:]}
            b.modes.pop(id(b.target), None)
            b.target.disable_prefix_cache()
            b.target.disable_fast()
        out[name] = res
    b.mode(b.target, "dynamic")
    return out


RUNNERS: dict[str, Callable[[Bench], dict[str, Any]]] = {
    "correctness": sec_correctness, "hf": sec_hf, "hf_static": sec_hf_static,
    "dynamic": sec_dynamic, "fast_eager": sec_fast_eager, "fast_graphs": sec_fast_graphs,
    "eventgpt": sec_eventgpt, "prefill": sec_prefill, "e2e": sec_e2e, "overlap": sec_overlap,
    "variants": sec_variants,
}


# -- report ----------------------------------------------------------------------------------


def _get(results: dict, *path: str) -> Any:
    cur: Any = results
    for p in path:
        if not isinstance(cur, dict) or p not in cur:
            return None
        cur = cur[p]
    return cur


def table(results: dict[str, Any], score_sizes: list[int]) -> str:
    """The headline figures as a markdown table (target = the issue's goals)."""
    rows = [
        ("HF eager decode (ms/token)", _get(results, "hf", "ms_per_token"), "24.3 (issue)"),
        ("HF static decode (ms/token)", _get(results, "hf_static", "ms_per_token"), "7.2 (issue)"),
        ("dynamic decode step (ms)", _get(results, "dynamic", "T1_ms"), ""),
        ("fast eager decode step (ms)", _get(results, "fast_eager", "T1_ms"), ""),
        ("fast graphs decode step (ms)", _get(results, "fast_graphs", "T1_ms"), "<= 4.0"),
        ("fast graphs decode step, other attention (ms)",
         _get(results, "fast_graphs", "other_attention", "T1_ms"), ""),
    ]
    for t in score_sizes:
        rows.append((f"fast graphs score {t} tokens (x decode)",
                     _get(results, "fast_graphs", f"T{t}_over_decode"), "<= 1.3 at 9"))
        rows.append((f"  other attention, score {t} tokens (x decode)",
                     _get(results, "fast_graphs", "other_attention", f"T{t}_over_decode"), ""))
    rows += [
        ("EventGPT dynamic decode step (ms)", _get(results, "eventgpt", "dynamic", "T1_ms"), ""),
        ("EventGPT unfused decode step (ms)", _get(results, "eventgpt", "unfused", "T1_ms"), ""),
        ("EventGPT fast decode step (ms)", _get(results, "eventgpt", "fast_graphs", "T1_ms"), "<= 4.0"),
        ("target prefill, dynamic (ms)", _get(results, "prefill", "dynamic", "prefill_ms"), ""),
        ("target prefill, fast (ms)", _get(results, "prefill", "fast_graphs", "prefill_ms"), "<= 55"),
        ("target prefill, prefix hit (ms)", _get(results, "prefill", "fast_prefix_hit", "prefill_ms"), "<= 10"),
        ("target vision, miss (ms)", _get(results, "prefill", "fast_prefix_miss", "vision_ms"), ""),
        ("e2e, HF eager (ms)", _get(results, "e2e", "hf_eager_total_ms"), ""),
        ("e2e, fast (ms)", _get(results, "e2e", "fast_total_ms"), ""),
        ("e2e speedup vs HF eager", _get(results, "e2e", "speedup_vs_hf"), ">= 5"),
        ("e2e speedup, prefix hit", _get(results, "e2e", "speedup_vs_hf_prefix_hit"), ""),
        ("overlapped / sequential prefill gain", _get(results, "overlap", "gain"), "> 1 pays"),
        ("min token match rate (correctness)", _get(results, "correctness", "min_match_rate"), "1.0 in fp32"),
        ("graph capture (ms, target)", _get(results, "fast_graphs", "fast", "capture_ms"), "<= 60000"),
    ]
    last = score_sizes[-1]
    for name in [n for n in VARIANTS if isinstance(_get(results, "variants", n), dict)]:
        v = ("variants", name)
        rows += [
            (f"[{name}] decode step (ms)", _get(results, *v, "T1_ms"), "<= 4.0"),
            (f"[{name}] score {last} tokens (x decode)", _get(results, *v, f"T{last}_over_decode"), "<= 1.3"),
            (f"[{name}] prefill (ms)", _get(results, *v, "prefill_ms"), "<= 55"),
            (f"[{name}] prefix-hit prefill (ms)", _get(results, *v, "prefix_hit_prefill_ms"), "<= 10"),
            (f"[{name}] token match vs unfused", _get(results, *v, "vs_unfused", "match_rate"), "bf16: reported"),
            (f"[{name}] max |logit diff| after a step", _get(results, *v, "vs_unfused", "step_logits_max_diff"), ""),
            (f"[{name}] first step incl. compile/capture (s)", _get(results, *v, "first_step_s"), ""),
        ]
    rows.append(("compile (ms, compiled variant: steps)",
                 _get(results, "variants", "compiled", "fast", "compile_ms"), "<= 60000"))
    rows.append(("compile (ms, compiled variant: first prefill incl. compile)",
                 _get(results, "variants", "compiled", "fast", "prefill_compile_ms"), ""))
    lines = ["| measure | value | goal |", "|---|---:|---|"]
    for name, value, goal in rows:
        text = "n/a" if value is None else (f"{value:.3f}" if isinstance(value, float) else str(value))
        lines.append(f"| {name} | {text} | {goal} |")
    peaks = {k: v.get("peak_mem_gib") for k, v in results.items() if isinstance(v, dict)}
    lines.append("")
    lines.append("peak GPU memory (GiB) per section: " + ", ".join(
        f"{k} {v:.1f}" for k, v in peaks.items() if isinstance(v, float)))
    errors = {k: v["error"] for k, v in results.items() if isinstance(v, dict) and "error" in v}
    for k, e in errors.items():
        lines.append(f"- section {k} FAILED: {e}")
    return "\n".join(lines)


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="7b", help="model preset for both models (7b, tiny-random)")
    p.add_argument("--device", default="cuda")
    p.add_argument("--dtype", default="bfloat16", choices=sorted(DTYPES))
    p.add_argument("--sections", default=",".join(SECTIONS), help="comma list of sections to run")
    p.add_argument("--skip", default="", help="comma list of sections to leave out")
    p.add_argument("--repeats", type=int, default=10, help="timed calls per step measurement")
    p.add_argument("--hf-repeats", type=int, default=2, help="repeats of whole generate calls")
    p.add_argument("--hf-tokens", type=int, default=64, help="new tokens for HF ms/token")
    p.add_argument("--e2e-tokens", type=int, default=128)
    p.add_argument("--check-requests", type=int, default=2)
    p.add_argument("--check-tokens", type=int, default=32)
    p.add_argument("--gammas", default="1,2,4,8", help="score steps of gamma + 1 tokens")
    p.add_argument("--compile-mode", default="max-autotune-no-cudagraphs",
                   help="torch.compile mode of the compiled variant (CUDA; 'default' compiles faster)")
    p.add_argument("--variants", default=",".join(DEFAULT_VARIANTS),
                   help="comma list of variants for the variants section, unfused first")
    p.add_argument("--attention", default="sdpa", choices=("sdpa", "matmul"),
                   help="step attention kernel of the fast path (fast_graphs measures both)")
    p.add_argument("--json", default=None, help="output JSON (default $OUT/fast_engine.json)")
    args = p.parse_args(argv)
    args.gammas = [int(g) for g in args.gammas.split(",") if g]
    chosen = [s for s in args.sections.split(",") if s]
    skip = {s for s in args.skip.split(",") if s}
    unknown = [s for s in [*chosen, *skip] if s not in RUNNERS]
    if unknown:
        p.error(f"unknown sections {unknown}; choose from {', '.join(SECTIONS)}")
    args.run = [s for s in SECTIONS if s in chosen and s not in skip]
    args.variants = [v for v in args.variants.split(",") if v]
    if not args.variants or args.variants[0] != "unfused" or any(v not in VARIANTS for v in args.variants):
        p.error(f"--variants must start with unfused (the reference) and use {', '.join(VARIANTS)}")
    return args  # "default" passes through: enable_fast maps only None to max-autotune


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse(argv)
    device = torch.device(args.device)
    dtype = DTYPES[args.dtype]
    if device.type == "cpu":
        torch.set_num_threads(1)  # tiny CPU models are dispatch-bound; threads only add noise
    torch.manual_seed(0)
    t0 = time.perf_counter()
    target = VideoLlavaTarget.from_preset(args.preset, dtype=dtype, device=device)
    eventgpt = EventGPT.from_preset(args.preset, dtype=dtype, device=device)
    load_s = time.perf_counter() - t0
    rng = np.random.default_rng(0)
    video = rng.integers(0, 256, (target.num_frames, 224, 224, 3), dtype=np.uint8)
    events = rng.integers(0, 256, (eventgpt.n_event_images, 240, 320, 3), dtype=np.uint8)
    bench = Bench(args, device, target, eventgpt, video, events)
    results: dict[str, Any] = {}
    if device.type == "cuda":
        results["weights_gib"] = torch.cuda.memory_allocated(device) / 2**30
    results["load_s"] = load_s
    for name in args.run:
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        start = time.perf_counter()
        try:
            out = RUNNERS[name](bench)
        except Exception as exc:  # record and go on with the next section
            out = {"error": f"{type(exc).__name__}: {exc}",
                   "traceback": traceback.format_exc().splitlines()[-8:]}
            bench.modes.clear()
            for model in (target, eventgpt):
                model.disable_prefix_cache()
                model.disable_fast()
        out["wall_s"] = time.perf_counter() - start
        if device.type == "cuda":
            out["peak_mem_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
        results[name] = out
        print(f"[{name}] {out['wall_s']:.1f} s" + (f"  ERROR {out['error']}" if "error" in out else ""),
              file=sys.stderr, flush=True)
    results["environment"] = capture_environment(
        extra={"preset": args.preset, "dtype": args.dtype, "device": str(device),
               "prompt_tokens": int(target.build_prompt_ids(QUESTIONS[0]).numel())})
    print(table(results, bench.score_sizes))
    path = args.json or (str(Path(os.environ["OUT"]) / "fast_engine.json") if os.environ.get("OUT") else None)
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(results, indent=2, default=str))
        print(f"wrote {path}", file=sys.stderr)
    return results


if __name__ == "__main__":
    main()
