"""Exactly lossless at the precision people run: speculative answers against target-only
answers in the dtype actually run, without forced reference, plus the step timings of the
engine that produced them.

    PYTHONPATH=src HF_HUB_OFFLINE=1 python3 benchmarks/exactness.py --out OUT_DIR
    PYTHONPATH=src python3 benchmarks/exactness.py --preset tiny-random --device cpu \\
        --dtype float32 --requests 2 --max-new-tokens 8 --out /tmp/exactness   # a CPU check

Random weights in the preset's shapes (default: the 7B presets of Video-LLaVA and EventGPT,
bf16, on CUDA).  Both models run the fast engine with its numerics contract
(``enable_fast(exact=True)``: the row-invariant Triton kernels on CUDA, one row bucket
elsewhere).  For ``--requests`` questions over one random clip, each answer of
``--max-new-tokens`` tokens (EOS ignored: random weights stop anywhere) is generated target-only
and with each drafter in ``--drafters`` (``self``, ``target-head`` with an untrained head,
``eventgpt`` with the EventGPT preset drafting on random event images), and the drafter's
answer is compared token for token with the target-only one: ``identical`` counts the equal
answers (all of them, when the contract holds).  Then, at the end of a prompt: a one-token
step, the chained greedy decode (``greedy_chain``, what target-only ``generate`` runs) per
token, a score of each ``--score-sizes`` tokens (in ms and in decode steps; sizes above 16 run
as a prefill pass, outside the contract) and the prefill.  Writes ``exactness.json`` and
``exactness.md`` into ``--out`` (default ``$OUT/exactness`` or ``results/exactness``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from evspec.bench.env import capture_environment
from evspec.decoding.drafters import UNTRAINED, make_drafter
from evspec.decoding.engine import generate
from evspec.models.eventgpt import EventGPT
from evspec.models.request import Request
from evspec.models.target import VideoLlavaTarget
from evspec.models.timing import sync

DRAFTERS = ("self", "target-head", "eventgpt")
DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}
#: questions are built from these words (distinct prompts, similar lengths)
WORDS = (
    "what",
    "moves",
    "where",
    "car",
    "left",
    "right",
    "fast",
    "slow",
    "person",
    "road",
    "light",
    "turns",
    "stops",
    "color",
    "which",
    "way",
    "near",
    "far",
    "object",
    "scene",
)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--preset", default="7b", help="model preset of both models (7b, tiny-random)")
    p.add_argument(
        "--dtype", default="bfloat16", choices=sorted(DTYPES), help="weights and activations"
    )
    p.add_argument(
        "--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cuda or cpu"
    )
    p.add_argument("--requests", type=int, default=64, help="questions answered per drafter")
    p.add_argument(
        "--max-new-tokens", type=int, default=128, help="tokens per answer (EOS ignored)"
    )
    p.add_argument(
        "--gamma", type=int, default=4, help="drafts per round (the score is gamma + 1 tokens)"
    )
    p.add_argument(
        "--drafters",
        default=",".join(DRAFTERS),
        help=f"comma-separated drafters to compare with target-only ({', '.join(DRAFTERS)})",
    )
    p.add_argument(
        "--score-sizes", default="2,3,5,9,17", help="comma-separated score sizes timed (tokens)"
    )
    p.add_argument("--repeats", type=int, default=20, help="timed repetitions per step (median)")
    p.add_argument(
        "--kernels",
        default=None,
        choices=("triton", "torch"),
        help="fast-engine step kernels (default: triton on CUDA, torch elsewhere)",
    )
    p.add_argument(
        "--out", default=None, help="output folder (default: $OUT/exactness or results/exactness)"
    )
    args = p.parse_args(argv)
    args.drafters = [d for d in args.drafters.split(",") if d]
    unknown = sorted(set(args.drafters) - set(DRAFTERS))
    if unknown:
        p.error(f"unknown drafters {unknown}; choose from {', '.join(DRAFTERS)}")
    args.score_sizes = [int(x) for x in args.score_sizes.split(",") if x]
    if args.requests < 1 or args.max_new_tokens < 2 or not 1 <= args.gamma <= 15:
        p.error("--requests >= 1, --max-new-tokens >= 2 and --gamma in 1..15")
    return args


def _median_ms(device: torch.device, fn: Callable[[], Any], repeats: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def questions(n: int, seed: int = 0) -> list[str]:
    """``n`` distinct questions of five to eight words."""
    rng = np.random.default_rng(seed)
    out: list[str] = []
    while len(out) < n:
        q = " ".join(rng.choice(WORDS, size=int(rng.integers(5, 9)))).capitalize() + "?"
        if q not in out:
            out.append(q)
    return out


def answers(
    target: VideoLlavaTarget,
    requests: list[Request],
    drafter: Any,
    args: argparse.Namespace,
    device: torch.device,
) -> tuple[list[list[int]], float]:
    """Every request's answer tokens with ``drafter`` (None: target-only) and the wall seconds."""
    out = []
    sync(device)
    t0 = time.perf_counter()
    for req in requests:
        res = generate(
            target,
            req,
            drafter,
            gamma=args.gamma,
            max_new_tokens=args.max_new_tokens,
            stop_at_eos=False,
        )
        out.append(res.tokens)
    sync(device)
    return out, time.perf_counter() - t0


def compare(reference: list[list[int]], got: list[list[int]]) -> dict[str, Any]:
    """Identical answers, equal tokens (position by position) and first divergences."""
    firsts = [
        next((i for i, (a, b) in enumerate(zip(r, g)) if a != b), None)
        for r, g in zip(reference, got)
    ]
    same = sum(r == g for r, g in zip(reference, got))
    tokens = sum(len(r) for r in reference)
    equal = sum(a == b for r, g in zip(reference, got) for a, b in zip(r, g))
    return {
        "identical": same,
        "requests": len(reference),
        "token_match_rate": equal / max(tokens, 1),
        "first_divergences": [f for f in firsts if f is not None][:16],
    }


def step_timings(
    target: VideoLlavaTarget, request: Request, sizes: list[int], repeats: int, device: torch.device
) -> dict[str, Any]:
    """One-token step, chained greedy decode per token, scores of ``sizes`` tokens, prefill."""
    state = target.prefill(request)
    tok = int(state.last_logits.argmax())
    out: dict[str, Any] = {"position": int(state.length)}

    def score(t: int) -> Callable[[], None]:
        feed = torch.full((t,), tok, dtype=torch.long)

        def call() -> None:
            target.score(state, feed)
            target.rollback(state, t)

        return call

    out["step_ms"] = _median_ms(device, score(1), repeats)
    if target.can_chain(state):
        n = 64

        def chain() -> None:
            target.greedy_chain(state, n, tok)
            target.rollback(state, n)

        out["decode_ms_per_token"] = _median_ms(device, chain, max(3, repeats // 4), warmup=2) / n
    else:
        out["decode_ms_per_token"] = out["step_ms"]
    out["scores"] = {}
    for t in sizes:
        ms = _median_ms(device, score(t), repeats)
        out["scores"][str(t)] = {
            "ms": ms,
            "decode_steps": ms / out["decode_ms_per_token"],
            "one_token_steps": ms / out["step_ms"],
        }
    target.release(state)

    def prefill() -> None:
        target.release(target.prefill(request))

    out["prefill_ms"] = _median_ms(device, prefill, max(3, repeats // 4), warmup=1)
    return out


def markdown(results: dict[str, Any]) -> str:
    cfg, steps = results["config"], results["steps"]
    lines = [
        f"# Exactness: {cfg['preset']} shapes, {cfg['dtype']}, {cfg['device_name']}",
        "",
        f"Engine: fast ({cfg['kernels']} kernels), exact = {cfg['exact']}; "
        f"{cfg['requests']} requests × "
        f"{cfg['max_new_tokens']} tokens, γ = {cfg['gamma']}, no forced reference.",
        "",
        "| drafter | identical answers | token match | wall s | first divergences |",
        "|---|---|---|---|---|",
    ]
    for name, r in results["drafters"].items():
        lines.append(
            f"| {name} | {r['identical']} / {r['requests']} | {r['token_match_rate']:.4f} | "
            f"{r['wall_s']:.1f} | {r['first_divergences'] or '-'} |"
        )
    lines += [
        "",
        f"Target-only: {results['target_only_wall_s']:.1f} s.",
        "",
        "| step | ms | in decode steps |",
        "|---|---|---|",
        f"| decode (chained greedy, per token) | {steps['decode_ms_per_token']:.3f} | 1.00 |",
        f"| one-token step | {steps['step_ms']:.3f} | "
        f"{steps['step_ms'] / steps['decode_ms_per_token']:.2f} |",
    ]
    for t, s in steps["scores"].items():
        note = " (a prefill pass: above 16 tokens)" if int(t) > 16 else ""
        lines.append(f"| score of {t} tokens{note} | {s['ms']:.3f} | {s['decode_steps']:.2f} |")
    lines += [
        f"| prefill ({steps['position']} tokens) | {steps['prefill_ms']:.2f} | |",
        "",
        f"Command: `{results['command']}`",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse(argv)
    device, dtype = torch.device(args.device), DTYPES[args.dtype]
    if device.type == "cpu":
        torch.set_num_threads(1)
    kernels = args.kernels or ("triton" if device.type == "cuda" else "torch")
    t0 = time.perf_counter()
    target = VideoLlavaTarget.from_preset(args.preset, dtype=dtype, device=device)
    eventgpt = (
        EventGPT.from_preset(args.preset, dtype=dtype, device=device)
        if "eventgpt" in args.drafters
        else None
    )
    target.enable_fast(kernels=kernels, exact=True, max_score_tokens=16)
    if eventgpt is not None:
        eventgpt.enable_fast(kernels=kernels)
    load_s = time.perf_counter() - t0
    rng = np.random.default_rng(0)
    video = rng.integers(0, 256, (target.num_frames, 224, 224, 3), dtype=np.uint8)
    events = (
        rng.integers(0, 256, (eventgpt.n_event_images, 240, 320, 3), dtype=np.uint8)
        if eventgpt is not None
        else None
    )
    requests = [Request(q, video=video, event_images=events) for q in questions(args.requests)]
    reference, ref_s = answers(target, requests, None, args, device)
    print(f"[target-only] {ref_s:.1f} s", file=sys.stderr, flush=True)
    drafters: dict[str, Any] = {}
    for name in args.drafters:
        opts: dict[str, Any] = {"head_path": UNTRAINED} if name == "target-head" else {}
        drafter = make_drafter(name, target=target, draft_model=eventgpt, **opts)
        got, wall = answers(target, requests, drafter, args, device)
        drafters[name] = {**compare(reference, got), "wall_s": wall}
        print(
            f"[{name}] {drafters[name]['identical']}/{len(requests)} identical, {wall:.1f} s",
            file=sys.stderr,
            flush=True,
        )
    steps = step_timings(target, requests[0], args.score_sizes, args.repeats, device)
    results = {
        "config": {
            "preset": args.preset,
            "dtype": args.dtype,
            "device": str(device),
            "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU",
            "engine": "fast",
            "kernels": kernels,
            "exact": bool(target.fast.exact),
            "requests": args.requests,
            "max_new_tokens": args.max_new_tokens,
            "gamma": args.gamma,
            "forced_reference": False,
            "load_s": load_s,
        },
        "target_only_wall_s": ref_s,
        "drafters": drafters,
        "steps": steps,
        "fast_stats": dict(target.fast.stats),
        "command": "PYTHONPATH=src HF_HUB_OFFLINE=1 python3 benchmarks/exactness.py "
        + " ".join(argv if argv is not None else sys.argv[1:]),
        "environment": capture_environment(extra={"preset": args.preset, "dtype": args.dtype}),
    }
    out = Path(
        args.out
        or (
            Path(os.environ["OUT"]) / "exactness"
            if os.environ.get("OUT")
            else Path(__file__).resolve().parent / "results" / "exactness"
        )
    )
    out.mkdir(parents=True, exist_ok=True)
    (out / "exactness.json").write_text(json.dumps(results, indent=2, default=str))
    (out / "exactness.md").write_text(markdown(results))
    print(markdown(results))
    print(f"wrote {out}/exactness.json and exactness.md", file=sys.stderr)
    return results


if __name__ == "__main__":
    main()
