"""The research's 4-bit setting at real 7B shapes, beside bf16.

Both ``7b`` presets (Video-LLaVA-7B target, EventGPT-7B drafter; random weights) in three
configurations, one after the other on one GPU:

``4bit``       decoders in bitsandbytes NF4 (``loading.load_models`` with ``quant="4bit"``; vision
               towers, projectors and LM heads in bf16), the dynamic path (the fast engine
               needs 16-bit weights)
``bf16``       the dynamic path (transformers modules, dynamic KV cache, eager)
``bf16-fast``  the same weights on the fast engine (``enable_fast``: static KV, fused
               weights, CUDA graphs on GPU)

Per configuration: target-only decode ms/token, target prefill ms (+ vision), time to
first token, resident and peak memory, and EventGPT's cost c = (EventGPT draft ms per
drafted token) / (target decode ms per token) with v = (target score of γ + 1 tokens) /
(decode step).  Drafting runs are **acceptance-controlled** (DESIGN.md §5: EventGPT's
real compute, its proposals replaced so that each is right with probability α, verified
against the target-only answer), because random weights accept nothing: c and v come
from the cell (``--c-alpha``, ``--c-gamma``); the 4-bit pair runs the grid α ∈
``--alphas`` × γ ∈ ``--gammas``.  Speedup = target-only / SD total ms on the same request
and answer length (each repeat runs the two back to back; median of the ratios), whole
request and after the first token, beside the decode speedup the measured c, v project
(``bench.theory.speedup``, labelled as projected).

    PYTHONPATH=src HF_HUB_OFFLINE=1 python3 benchmarks/quant_7b.py            # H200, < 4 min
    PYTHONPATH=src HF_HUB_OFFLINE=1 python3 benchmarks/quant_7b.py --preset tiny-random --device cpu

Prints a markdown table; writes ``$OUT/quant_7b.json`` (or ``--json``).  EOS is ignored,
so every run decodes ``--new-tokens``; medians over ``--repeats`` after a short warm-up.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import time
from typing import Any, Callable

import torch

from evspec.bench.env import capture_environment
from evspec.bench.theory import speedup as projected_speedup
from evspec.decoding.drafters import make_drafter
from evspec.decoding.drafters.controlled import ControlledDrafter
from evspec.decoding.engine import generate
from evspec.decoding.stats import Result
from evspec.models.quant import quant_report
from evspec.models.request import Request
from evspec.loading import ModelSpec, load_models, random_images, resolve_device, resolve_dtype

CONFIGS = ("4bit", "bf16", "bf16-fast")


def _floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x.strip()]


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="7b", help="model preset for both models (7b, tiny-random)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtype", default="auto", help="16-bit dtype (auto: bf16 on CUDA, float32 on CPU)")
    ap.add_argument("--new-tokens", type=int, default=40)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--alphas", type=_floats, default=[0.5, 0.9])
    ap.add_argument("--gammas", type=_ints, default=[1, 4])
    ap.add_argument("--c-alpha", type=float, default=0.9, help="set α of the run that measures c and v")
    ap.add_argument("--c-gamma", type=int, default=4, help="γ of the run that measures c and v")
    ap.add_argument("--configs", default=",".join(CONFIGS), help=f"subset of {','.join(CONFIGS)}")
    ap.add_argument("--json", default=None, help="output file (default $OUT/quant_7b.json)")
    args = ap.parse_args(argv)
    args.configs = [c for c in args.configs.split(",") if c]
    bad = [c for c in args.configs if c not in CONFIGS]
    if bad:
        ap.error(f"--configs: unknown {bad}; choose from {', '.join(CONFIGS)}")
    if args.new_tokens < 4 or args.repeats < 1:
        ap.error("--new-tokens must be >= 4 and --repeats >= 1")
    if any(not 0.0 <= a <= 1.0 for a in args.alphas + [args.c_alpha]) or any(g < 1 for g in args.gammas + [args.c_gamma]):
        ap.error("--alphas must lie in [0, 1] and gammas be >= 1")
    return args


# -- memory and timing helpers ------------------------------------------------------------


def _gib(n: float) -> float:
    return n / 2**30


def _free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _mem(device: torch.device) -> dict[str, float | None]:
    if device.type != "cuda":
        return {"resident_gib": None, "peak_gib": None}
    return {"resident_gib": _gib(torch.cuda.memory_allocated(device)),
            "peak_gib": _gib(torch.cuda.max_memory_allocated(device))}


def _median(values: list[float]) -> float:
    return float(statistics.median(values))


def _runs(fn: Callable[[int], Result], n: int, repeats: int) -> list[Result]:
    """``fn(max_new_tokens)`` once short (warm-up), then ``repeats`` times with ``n``."""
    fn(4)
    return [fn(n) for _ in range(repeats)]


def _after_first_ms(r: Result) -> float:
    return r.stats.total_ms - r.stats.ttft_ms


# -- one configuration ----------------------------------------------------------------------


def target_only(target: Any, req: Request, n: int, repeats: int) -> tuple[dict[str, Any], list[int]]:
    runs = _runs(lambda m: generate(target, req, None, max_new_tokens=m, stop_at_eos=False), n, repeats)
    s = [r.stats for r in runs]
    out = {
        "decode_ms_per_token": _median([_after_first_ms(r) / (r.stats.new_tokens - 1) for r in runs]),
        "prefill_ms": _median([x.target_prefill_ms for x in s]),
        "vision_ms": _median([x.target_vision_ms for x in s]),
        "ttft_ms": _median([x.ttft_ms for x in s]),
        "total_ms": _median([x.total_ms for x in s]),
        "after_first_ms": _median([_after_first_ms(r) for r in runs]),
        "new_tokens": runs[-1].stats.new_tokens,
        "repeatable": all(r.tokens == runs[0].tokens for r in runs),
    }
    return out, runs[0].tokens


def controlled(target: Any, eventgpt: Any, req: Request, reference: list[int], alpha: float,
               gamma: int, n: int, repeats: int) -> dict[str, Any]:
    """Acceptance-controlled SD with EventGPT's real compute at set α (labelled as such).

    Each repeat runs the target-only answer and then the SD answer back to back, so the
    speedup (median of the per-pair ratios) does not drift with the machine.  EventGPT's
    cost comes from the same runs: c = draft ms per drafted token / target decode ms per
    token, v = target score of γ + 1 tokens / decode step (full rounds only).
    """
    def base(m: int) -> Result:
        return generate(target, req, None, max_new_tokens=m, stop_at_eos=False)

    def sd(m: int) -> Result:
        drafter = ControlledDrafter(make_drafter("eventgpt", target=target, draft_model=eventgpt),
                                    target, alpha, seed=0)
        drafter.set_reference(reference[:m])
        return generate(target, req, drafter, gamma=gamma, max_new_tokens=m, stop_at_eos=False,
                        forced_reference=drafter.forced_reference)

    sd(4)  # warm-up
    pairs = [(base(n), sd(n)) for _ in range(repeats)]
    runs = [r for _, r in pairs]
    step = _median([_after_first_ms(b) / (b.stats.new_tokens - 1) for b, _ in pairs])
    draft = _median([sum(x.draft_ms for x in r.stats.rounds) / max(r.stats.drafted, 1) for r in runs])
    full = [x.score_ms for r in runs for x in r.stats.rounds if x.drafted == gamma]
    score = _median(full) if full else float("nan")
    c, v = draft / step, score / step
    return {
        "alpha_set": alpha,
        "gamma": gamma,
        "alpha_measured": _median([r.stats.alpha for r in runs]),
        "tau": _median([r.stats.tau for r in runs]),
        "total_ms": _median([r.stats.total_ms for r in runs]),
        "target_only_total_ms": _median([b.stats.total_ms for b, _ in pairs]),
        "speedup_total": _median([b.stats.total_ms / r.stats.total_ms for b, r in pairs]),
        "speedup_after_first_token": _median([_after_first_ms(b) / _after_first_ms(r) for b, r in pairs]),
        "projected_decode_speedup": projected_speedup(alpha, gamma, c, v) if full else None,
        "draft_ms_per_token": draft,
        "score_ms_gamma_plus_1": score,
        "target_step_ms": step,
        "c": c,
        "v": v,
        "draft_prefill_ms": _median([r.stats.draft_prefill_ms for r in runs]),
        "draft_vision_ms": _median([r.stats.draft_vision_ms for r in runs]),
        "output_is_reference": all(r.tokens == reference[: len(r.tokens)] for r in runs),
    }


def measure(name: str, target: Any, eventgpt: Any, req: Request, args: argparse.Namespace,
            device: torch.device, load: dict[str, Any]) -> dict[str, Any]:
    t0 = time.perf_counter()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    out: dict[str, Any] = {"config": name, **load}
    out["quant"] = {"target": quant_report(target.model).to_dict(),
                    "eventgpt": quant_report(eventgpt.model).to_dict()}
    if name == "bf16-fast":
        target.enable_fast()
        eventgpt.enable_fast()
    base, reference = target_only(target, req, args.new_tokens, args.repeats)
    out["target_only"] = base
    # the 4-bit pair: the whole α × γ grid; the others: the one cell that measures c and v
    cells = [(a, g) for a in args.alphas for g in args.gammas] if name == "4bit" else []
    if (args.c_alpha, args.c_gamma) not in cells:
        cells.append((args.c_alpha, args.c_gamma))
    out["controlled"] = [controlled(target, eventgpt, req, reference, a, g, args.new_tokens, args.repeats)
                         for a, g in cells]
    out["eventgpt"] = next(c for c in out["controlled"]
                           if (c["alpha_set"], c["gamma"]) == (args.c_alpha, args.c_gamma))
    out["run_peak_gib"] = _mem(device)["peak_gib"]
    out["wall_s"] = time.perf_counter() - t0
    print(f"[{name}] done in {out['wall_s']:.1f} s", flush=True)
    return out


def load_pair(quant: str, args: argparse.Namespace, device: torch.device, dtype: torch.dtype) -> tuple[Any, Any, dict]:
    _free(device)
    t0 = time.perf_counter()
    loaded = load_models(ModelSpec(target=args.preset, draft_model=args.preset, device=str(device),
                                   dtype=str(dtype).removeprefix("torch."), seed=0, quant=quant))
    target, eventgpt = loaded.target, loaded.draft
    mem = _mem(device)
    load = {"load_s": time.perf_counter() - t0, "weights_gib": mem["resident_gib"],
            "load_peak_gib": mem["peak_gib"]}
    return target, eventgpt, load


# -- report ------------------------------------------------------------------------------------


def _fmt(x: Any, spec: str = ".1f") -> str:
    return "–" if x is None else format(x, spec)


def markdown(results: dict[str, Any]) -> str:
    lines = ["| config | weights GiB | run peak GiB | target decode ms/tok | target prefill ms (+vision) "
             "| TTFT ms | EventGPT draft ms/tok | c | v (score γ+1) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, r in results["configs"].items():
        if "error" in r:
            lines.append(f"| {name} | error: {r['error']} |")
            continue
        t, e = r["target_only"], r["eventgpt"]
        lines.append(
            f"| {name} | {_fmt(r['weights_gib'])} | {_fmt(r['run_peak_gib'])} | {t['decode_ms_per_token']:.2f} "
            f"| {t['prefill_ms']:.1f} (+{t['vision_ms']:.1f}) | {t['ttft_ms']:.1f} "
            f"| {e['draft_ms_per_token']:.2f} | {e['c']:.2f} | {e['v']:.2f} |"
        )
    rows = results["configs"].get("4bit", {}).get("controlled", [])
    if rows:
        lines += ["", "Acceptance-controlled, 4-bit pair (EventGPT-7B drafting for Video-LLaVA-7B; "
                  "random weights, α set; projected = τ/(γc+v) from the measured c, v):", "",
                  "| α set | γ | α measured (accepted/drafted) | τ | target-only ms | SD ms "
                  "| speedup (request) | speedup (after 1st token) | projected (decode) |",
                  "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for c in rows:
            lines.append(
                f"| {c['alpha_set']:g} | {c['gamma']} | {c['alpha_measured']:.2f} | {c['tau']:.2f} "
                f"| {c['target_only_total_ms']:.0f} | {c['total_ms']:.0f} | {c['speedup_total']:.2f}× "
                f"| {c['speedup_after_first_token']:.2f}× | {_fmt(c['projected_decode_speedup'], '.2f')}× |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    import bitsandbytes

    results: dict[str, Any] = {
        "environment": capture_environment(extra={
            "preset": args.preset, "dtype": str(dtype), "bitsandbytes": bitsandbytes.__version__,
            "new_tokens": args.new_tokens, "repeats": args.repeats}),
        "configs": {},
    }
    wanted = [c for c in CONFIGS if c in args.configs]
    for quant, names in (("4bit", ["4bit"]), ("none", ["bf16", "bf16-fast"])):
        names = [n for n in names if n in wanted]
        if not names:
            continue
        target, eventgpt, load = load_pair(quant, args, device, dtype)
        req = Request(
            "What is happening in the scene?",
            video=random_images(target.num_frames, target.config.vision_config.image_size, 0),
            event_images=random_images(eventgpt.n_event_images, eventgpt.config.image_size, 1),
        )
        results["prompt_tokens"] = int(target.build_prompt_ids(req.question).numel())
        for name in names:  # bf16 before bf16-fast: enable_fast only adds
            try:
                results["configs"][name] = measure(name, target, eventgpt, req, args, device, load)
            except (RuntimeError, ValueError) as err:  # one failing config does not stop the rest
                results["configs"][name] = {"error": f"{type(err).__name__}: {err}"}
                print(f"[{name}] failed: {err}", flush=True)
        del target, eventgpt
    print(markdown(results))
    path = args.json or (os.path.join(os.environ["OUT"], "quant_7b.json") if os.environ.get("OUT") else None)
    if path:
        with open(path, "w") as f:
            json.dump(results, f, indent=1, default=str)
        print(f"wrote {path}")
    return results


if __name__ == "__main__":
    main()
