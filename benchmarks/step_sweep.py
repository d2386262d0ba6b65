"""Launch configurations of the Triton decode layer, timed inside the whole decode step.

``gemv.DECODE_CONFIGS`` and ``decode_attention.STEP_CONFIGS`` come from sweeps of each
kernel alone (chained with itself); inside a step every kernel follows a different one,
and the GEMVs reach 3.63–3.74 TB/s there against 3.86–4.0 alone (benchmarks/fast_engine.md,
round 5).  This times what users get — greedy decoding with the tokens on the device
(``greedy_chain``: ``--steps`` graphed steps, one synchronisation) — once per variant:

    phase ``one``:  the shipped configuration, then one kernel changed at a time
                    (:data:`VARIANTS`: q/k/v block width and rotary split, o, gate/up,
                    down, split-KV stage 1)
    phase ``best``: the best label of each kernel together, A/B against the shipped one
                    (alternating, ``--ab`` rounds)

Each variant re-enables the fast path (new graphs; Triton compiles the new constants),
prefills the same request and checks its first ``--check`` greedy ids against the shipped
configuration's (bf16 sums in another order may flip a near-tie on random weights: the
count is reported, not asserted).  ``--budget-s`` stops the sweep in time to write the
JSON (written after every variant anyway).

    PYTHONPATH=src HF_HUB_OFFLINE=1 python3 benchmarks/step_sweep.py            # 7b, cuda, bf16
    PYTHONPATH=src HF_HUB_OFFLINE=1 python3 benchmarks/step_sweep.py --preset tiny-random --device cpu --kernels torch
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import torch

from evspec.models.fast import decode_attention, gemv, triton_layer
from evspec.models.request import Request
from evspec.session import random_images, resolve_device, resolve_dtype
from gemv_probe import parse_config  # siblings: benchmarks/ is the script's folder
from probe_common import median_ms, write_json

#: weight shape (N, K) of each LLaMA-7B projection in gemv.DECODE_CONFIGS
SHAPES = {"qkv": (12288, 4096), "o": (4096, 4096), "gate_up": (22016, 4096), "down": (4096, 11008)}
#: labels tried per kernel (round 6's second sweep; the first round's lists are in its JSON
#: and benchmarks/fast_engine.md); the first is the shipped one.  q/k/v: ``BKwWsS/cC`` (C columns of
#: each rotary half a program: 2C weight rows); GEMVs: ``BNxBKwWsS``; attention
#: stage 1 (one query row): ``blocks,keys,warps,stages``
VARIANTS: dict[str, list[str]] = {
    "vec": ["8", "1"],  # gemv.ROW_VEC: products summed per thread before the accumulator
    "qkv": ["1024w4s1/c4", "1024w4s3/c4", "1024w4s2/c4", "512w4s1/c4", "1024w4s1/c2"],
    "o": ["32x2048w8s1", "16x2048w8s1", "32x1024w8s1", "16x1024w8s1", "16x4096w8s1", "16x2048w8s3"],
    "gate_up": ["16x1024w4s3", "8x1024w4s3", "8x1024w4s2", "16x512w4s3", "8x1024w8s3", "16x1024w4s1"],
    "down": ["16x2048w8s1", "8x2048w8s1", "8x2048w4s1", "8x1024w8s3", "8x4096w8s1", "8x2048w8s3"],
    "attention": ["264,128,8,2", "396,128,8,2", "264,64,4,3"],
}


def apply(kernel: str, label: str) -> None:
    """Install ``label`` for ``kernel`` in the modules' tables (module-wide, this process)."""
    if kernel == "vec":
        gemv.ROW_VEC = int(label)
    elif kernel == "attention":
        blocks, keys, warps, stages = (int(x) for x in label.split(","))
        decode_attention.STEP_CONFIGS["one"] = (blocks, keys, warps, stages)
    elif kernel == "qkv":
        cfg, cols = label.split("/c")
        bk, rest = cfg.split("w")
        warps, stages = (int(x) for x in rest.split("s"))
        gemv.DECODE_CONFIGS[SHAPES["qkv"]] = (8, int(bk), warps, stages)
        triton_layer.DECODE_HEAD_COLUMNS = int(cols)
    else:
        bn, bk, warps, stages = parse_config(label)
        gemv.DECODE_CONFIGS[SHAPES[kernel]] = (bn, bk, warps, stages or 1)


def chain_ms(target: Any, request: Request, steps: int, repeats: int, check: int,
             kernels: str = "triton") -> tuple[float, list[int]]:
    """ms per token of ``steps`` chained greedy decode steps at the prompt end (median of
    ``repeats``), and the first ``check`` greedy ids."""
    target.disable_fast()
    target.enable_fast(kernels=kernels, max_score_tokens=2)
    state = target.prefill(request)
    first = int(state.last_logits.argmax())
    ids = target.greedy_chain(state, check, first).tolist()
    target.rollback(state, check)

    def run() -> None:
        target.greedy_chain(state, steps, first)
        target.rollback(state, steps)

    ms = median_ms(run, repeats, state.cache.k.device.type == "cuda", warmup=2) / steps
    target.release(state)
    return ms, ids


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="7b")
    p.add_argument("--device", default="cuda")
    p.add_argument("--dtype", default="auto")
    p.add_argument("--steps", type=int, default=64, help="chained decode steps per timed call")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--check", type=int, default=16, help="greedy ids compared with the shipped configuration")
    p.add_argument("--phase", choices=("one", "best", "both"), default="both")
    p.add_argument("--only", default=None, help="comma separated kernels of VARIANTS (default: all)")
    p.add_argument("--ab", type=int, default=3, help="A/B rounds of the best phase")
    p.add_argument("--budget-s", type=float, default=420.0, help="stop starting variants after this")
    p.add_argument("--kernels", default="triton",
                   help="enable_fast(kernels=...): triton (what the sweep is for), or torch to prove the script "
                        "on a model the Triton layer does not take (tiny presets)")
    p.add_argument("--json", default=None, help="output JSON (default $OUT/step_sweep.json)")
    args = p.parse_args(argv)
    kernels = args.only.split(",") if args.only else list(VARIANTS)
    unknown = set(kernels) - set(VARIANTS)
    if unknown or min(args.steps, args.repeats, args.check, args.ab) < 1:
        p.error(f"unknown kernels {sorted(unknown)}" if unknown else "--steps/--repeats/--check/--ab must be >= 1")
    from evspec.models.target import VideoLlavaTarget

    t_start = time.perf_counter()
    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    target = VideoLlavaTarget.from_preset(args.preset, device=device, dtype=dtype, seed=0)
    request = Request("What is moving in the scene?",
                      video=random_images(target.num_frames, target.config.vision_config.image_size, 0))
    shipped = {k: VARIANTS[k][0] for k in VARIANTS}
    results: dict[str, Any] = {
        "preset": args.preset, "kernels": args.kernels, "dtype": str(dtype), "torch": torch.__version__, "steps": args.steps,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "one": {}, "best": {},
    }

    def measure(config: dict[str, str]) -> dict[str, Any]:
        for kernel, label in config.items():
            apply(kernel, label)
        ms, ids = chain_ms(target, request, args.steps, args.repeats, args.check, args.kernels)
        return {"ms_per_token": ms, "ids": ids}

    def save() -> None:
        write_json(results, args.json, "step_sweep.json")

    base = measure(shipped)
    results["shipped"] = {"config": shipped, **base}
    save()
    print(f"shipped {base['ms_per_token']:.4f} ms/token")
    if args.phase in ("one", "both"):
        for kernel in kernels:
            rows = results["one"].setdefault(kernel, {})
            for label in VARIANTS[kernel][1:]:
                if time.perf_counter() - t_start > args.budget_s:
                    results["stopped"] = f"budget reached before {kernel} {label}"
                    break
                try:
                    r = measure({**shipped, kernel: label})
                except Exception as exc:  # a configuration that does not compile is recorded
                    rows[label] = {"error": f"{type(exc).__name__}: {exc}"[:300]}
                    continue
                r["same_ids"] = sum(a == b for a, b in zip(r.pop("ids"), base["ids"]))
                rows[label] = r
                print(f"{kernel:9} {label:14} {r['ms_per_token']:.4f} ms/token  ids {r['same_ids']}/{args.check}")
                save()
    if args.phase in ("best", "both") and results["one"]:
        best = dict(shipped)
        for kernel, rows in results["one"].items():
            timed = {lab: r["ms_per_token"] for lab, r in rows.items() if "ms_per_token" in r}
            timed[shipped[kernel]] = base["ms_per_token"]
            best[kernel] = min(timed, key=timed.get)
        results["best"] = {"config": best, "shipped_ms": [], "best_ms": []}
        for _ in range(args.ab):
            results["best"]["shipped_ms"].append(measure(shipped)["ms_per_token"])
            results["best"]["best_ms"].append(measure(best)["ms_per_token"])
        print(f"best {best}: {results['best']['best_ms']} vs shipped {results['best']['shipped_ms']}")
    measure(shipped)  # leave the modules as shipped
    results["seconds"] = time.perf_counter() - t_start
    dest = write_json(results, args.json, "step_sweep.json")
    print(f"wrote {dest}")
    return results


if __name__ == "__main__":
    main()
