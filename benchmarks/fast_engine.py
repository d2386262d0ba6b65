"""Fast-engine benchmark: HF eager / HF static / our dynamic path / fast path
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
                 γ + 1 = 2, 3, 5, 9 tokens (ratio to one decode step); greedy decoding
                 with the tokens on the device (64 chained steps, ms/token: what
                 target-only ``generate`` runs)
``eventgpt``     EventGPT-7B decode step (and chained), dynamic, unfused and fast (graphs)
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
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np
import torch

from evspec.bench.env import capture_environment
from evspec.models.eventgpt import EventGPT
from evspec.models.fast.step_attention import ATTENTION_KINDS
from evspec.models.target import VideoLlavaTarget
from fast_engine_sections import RUNNERS

from fast_engine_bench import DEFAULT_VARIANTS, DTYPES, QUESTIONS, SECTIONS, VARIANTS, Bench


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
        ("fast graphs greedy decode, tokens on the device (ms/token)",
         _get(results, "fast_graphs", "chain_ms_per_token"), "<= 4.0"),
    ]
    others = _get(results, "fast_graphs", "other_attention") or {}
    for kind in others:
        rows.append((f"fast graphs decode step, attention {kind} (ms)", _get(others, kind, "T1_ms"), ""))
    for t in score_sizes:
        rows.append((f"fast graphs score {t} tokens (x decode)",
                     _get(results, "fast_graphs", f"T{t}_over_decode"), "<= 1.3 at 9"))
        rows.append((f"fast graphs score {t} tokens (ms)", _get(results, "fast_graphs", f"T{t}_ms"), ""))
        for kind in others:
            rows.append((f"  attention {kind}, score {t} tokens (ms)", _get(others, kind, f"T{t}_ms"), ""))
    rows += [
        ("EventGPT dynamic decode step (ms)", _get(results, "eventgpt", "dynamic", "T1_ms"), ""),
        ("EventGPT unfused decode step (ms)", _get(results, "eventgpt", "unfused", "T1_ms"), ""),
        ("EventGPT fast decode step (ms)", _get(results, "eventgpt", "fast_graphs", "T1_ms"), "<= 4.0"),
        ("EventGPT fast greedy decode, tokens on the device (ms/token)",
         _get(results, "eventgpt", "fast_graphs", "chain_ms_per_token"), "<= 4.0"),
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
        ("compile (ms, --fast-mode compiled: target steps)", _get(results, "fast_graphs", "fast", "compile_ms"),
         "<= 60000"),
        ("compile (ms, --fast-mode compiled: EventGPT steps)", _get(results, "eventgpt", "fast", "compile_ms"), ""),
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
    p.add_argument("--compile-mode", default="default",
                   help="torch.compile mode of the compiled variant (CUDA; e.g. max-autotune-no-cudagraphs)")
    p.add_argument("--fast-mode", default="fast_graphs", choices=("fast_graphs", "compiled", "triton"),
                   help="what the fast sections (fast_graphs, eventgpt, prefill, e2e, overlap) run: "
                        "the fused graphs, the compiled variant (--compile), or the compiled variant with "
                        "the Triton decode layer (--compile --kernels triton)")
    p.add_argument("--variants", default=",".join(DEFAULT_VARIANTS),
                   help="comma list of variants for the variants section, unfused first")
    p.add_argument("--attention", default="auto", choices=ATTENTION_KINDS,
                   help="step attention kernel of the fast path (fast_graphs measures every kind)")
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
    return args


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
