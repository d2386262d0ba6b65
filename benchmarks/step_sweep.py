"""Launch configurations of the Triton decode layer, timed inside the whole decode step.

``gemv.DECODE_CONFIGS`` and ``decode_attention.STEP_CONFIGS`` come from sweeps of each
kernel alone (chained with itself); inside a step every kernel follows a different one,
and the GEMVs reach 3.63–3.74 TB/s there against 3.86–4.0 alone (benchmarks/fast_engine.md).
This times what users get — greedy decoding with the tokens on the device
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
from typing import Any, Callable

import torch

from evspec.models.fast import decode_attention, gemv, triton_layer
from evspec.models.request import Request
from evspec.loading import ModelSpec, load_models, random_images
from gemv_probe import parse_config  # siblings: benchmarks/ is the script's folder
from probe_common import median_ms, write_json

#: weight shape (N, K) of each LLaMA-7B projection in gemv.DECODE_CONFIGS
SHAPES = {"qkv": (12288, 4096), "o": (4096, 4096), "gate_up": (22016, 4096), "down": (4096, 11008)}
#: labels tried per kernel (the refined sweep; the first sweep's lists are in its JSON,
#: benchmarks/results/engine/step_sweep.json); the first is the shipped one.
#: q/k/v: ``BKwWsS/cC`` (C columns of
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

#: the same for steps of ``--rows`` > 1 (``tl.dot`` on 16 padded rows): which layer scores
#: (the Triton layer for steps of up to 16 rows, or the compiled torch layer the engine
#: ships), then the Triton layer's configurations (q/k/v ``BKwWsS/cC``, GEMVs ``BNxBKwWsS``)
SCORE_VARIANTS: dict[str, list[str]] = {
    "layer": ["triton", "compiled"],
    "mqkv": ["128w4s3/c32", "256w4s3/c32", "128w4s3/c16", "256w4s3/c16", "128w4s4/c16", "64w4s4/c16"],
    "mo": ["64x128w4s3", "16x256w4s3", "32x256w4s3", "16x512w4s3", "32x128w4s4", "16x256w4s4"],
    "mgate_up": ["64x128w4s3", "16x256w4s3", "32x256w4s3", "16x512w4s3", "32x128w4s4", "64x128w4s4"],
    "mdown": ["64x128w4s3", "16x256w4s3", "32x256w4s3", "32x128w8s4", "32x128w4s4", "16x256w4s4"],
}


def apply(kernel: str, label: str) -> None:
    """Install ``label`` for ``kernel`` in the modules' tables (module-wide, this process)."""
    if kernel == "layer":
        triton_layer.STEP_ROWS = 16 if label == "triton" else 1
    elif kernel == "vec":
        gemv.ROW_VEC = int(label)
    elif kernel == "attention":
        blocks, keys, warps, stages = (int(x) for x in label.split(","))
        decode_attention.STEP_CONFIGS["one"] = (blocks, keys, warps, stages)
    else:  # a GEMV: BNxBKwWsS, or q/k/v's BKwWsS/cC (its rows per program come from C)
        score, shape = kernel.startswith("m"), kernel.removeprefix("m")
        cfg, _, cols = label.partition("/c")
        bn, bk, warps, stages = parse_config(f"8x{cfg}" if shape == "qkv" else cfg)
        (gemv.SCORE_CONFIGS if score else gemv.DECODE_CONFIGS)[SHAPES[shape]] = (bn, bk, warps, stages or 1)
        if shape == "qkv":
            setattr(triton_layer, "SCORE_HEAD_COLUMNS" if score else "DECODE_HEAD_COLUMNS", int(cols))


def snapshot() -> Callable[[], None]:
    """What :func:`apply` changes, and a function that puts it back."""
    tables = (dict(gemv.DECODE_CONFIGS), dict(gemv.SCORE_CONFIGS), dict(decode_attention.STEP_CONFIGS))
    scalars = (gemv.ROW_VEC, triton_layer.STEP_ROWS, triton_layer.DECODE_HEAD_COLUMNS,
               triton_layer.SCORE_HEAD_COLUMNS)

    def restore() -> None:
        for table, saved in zip((gemv.DECODE_CONFIGS, gemv.SCORE_CONFIGS, decode_attention.STEP_CONFIGS), tables):
            table.clear()
            table.update(saved)
        (gemv.ROW_VEC, triton_layer.STEP_ROWS, triton_layer.DECODE_HEAD_COLUMNS,
         triton_layer.SCORE_HEAD_COLUMNS) = scalars

    return restore


def step_ms(target: Any, request: Request, rows: int, steps: int, repeats: int, check: int,
            kernels: str = "triton", compile: bool = False) -> tuple[float, list[int]]:
    """``rows`` 1: ms per token of ``steps`` chained greedy decode steps at the prompt end
    (median of ``repeats``) and the first ``check`` greedy ids.  More rows: ms of one score
    step of ``rows`` tokens there (median) and the argmax of each row."""
    target.disable_fast()
    target.enable_fast(kernels=kernels, max_score_tokens=16, buckets=tuple(sorted({1, 2, 4, 8, 16, rows})),
                       compile=compile)  # a score of ``rows`` runs unpadded, as the bench's
    state = target.prefill(request)
    first = int(state.last_logits.argmax())
    cuda = state.cache.k.device.type == "cuda"
    if rows == 1:
        ids = target.greedy_chain(state, check, first).tolist()
        target.rollback(state, check)

        def run() -> None:
            target.greedy_chain(state, steps, first)
            target.rollback(state, steps)

        ms = median_ms(run, repeats, cuda, warmup=2) / steps
    else:
        feed = torch.full((rows,), first, dtype=torch.long)
        ids = target.score(state, feed).logits.argmax(-1).tolist()
        target.rollback(state, rows)

        def run() -> None:
            target.score(state, feed)
            target.rollback(state, rows)

        ms = median_ms(run, repeats * 8, cuda, warmup=3)
    target.release(state)
    return ms, ids


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """The sweep (see the module docstring); the modules' tables are restored afterwards."""
    restore = snapshot()
    try:
        return _sweep(argv)
    finally:
        restore()


def _sweep(argv: list[str] | None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="7b")
    p.add_argument("--device", default="cuda")
    p.add_argument("--dtype", default="auto")
    p.add_argument("--rows", type=int, default=1,
                   help="1: chained decode steps (VARIANTS); 2..16: one score step of this many tokens "
                        "(SCORE_VARIANTS: the Triton layer for steps of up to 16 rows against the compiled one)")
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
    if not 1 <= args.rows <= 16:
        p.error("--rows must be in 1..16")
    variants = VARIANTS if args.rows == 1 else SCORE_VARIANTS
    kernels = args.only.split(",") if args.only else list(variants)
    unknown = set(kernels) - set(variants)
    if unknown or min(args.steps, args.repeats, args.check, args.ab) < 1:
        p.error(f"unknown kernels {sorted(unknown)}" if unknown else "--steps/--repeats/--check/--ab must be >= 1")
    t_start = time.perf_counter()
    loaded = load_models(ModelSpec(target=args.preset, device=args.device, dtype=args.dtype))
    target, device, dtype = loaded.target, loaded.device, loaded.dtype
    request = Request("What is moving in the scene?",
                      video=random_images(target.num_frames, target.config.vision_config.image_size, 0))
    shipped = {k: variants[k][0] for k in variants}
    results: dict[str, Any] = {
        "preset": args.preset, "rows": args.rows, "kernels": args.kernels, "dtype": str(dtype), "torch": torch.__version__, "steps": args.steps,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "one": {}, "best": {},
    }

    def measure(config: dict[str, str]) -> dict[str, Any]:
        for kernel, label in config.items():
            apply(kernel, label)
        compiled = config.get("layer") == "compiled"
        ms, ids = step_ms(target, request, args.rows, args.steps, args.repeats, args.check, args.kernels, compiled)
        return {"ms_per_token" if args.rows == 1 else "ms": ms, "ids": ids}

    def save() -> None:
        write_json(results, args.json, "step_sweep.json")

    base = measure(shipped)
    results["shipped"] = {"config": shipped, **base}
    save()
    key = "ms_per_token" if args.rows == 1 else "ms"
    print(f"shipped {base[key]:.4f} {key}")
    if args.phase in ("one", "both"):
        for kernel in kernels:
            rows = results["one"].setdefault(kernel, {})
            for label in variants[kernel][1:]:
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
                print(f"{kernel:9} {label:14} {r[key]:.4f} {key}  ids {r['same_ids']}/{len(base['ids'])}")
                save()
    if args.phase in ("best", "both") and results["one"]:
        best = dict(shipped)
        for kernel, rows in results["one"].items():
            timed = {lab: r[key] for lab, r in rows.items() if key in r}
            timed[shipped[kernel]] = base[key]
            best[kernel] = min(timed, key=timed.get)
        results["best"] = {"config": best, "shipped_ms": [], "best_ms": []}
        for _ in range(args.ab):
            results["best"]["shipped_ms"].append(measure(shipped)[key])
            results["best"]["best_ms"].append(measure(best)[key])
        print(f"best {best}: {results['best']['best_ms']} vs shipped {results['best']['shipped_ms']}")
    results["seconds"] = time.perf_counter() - t_start
    dest = write_json(results, args.json, "step_sweep.json")
    print(f"wrote {dest}")
    return results


if __name__ == "__main__":
    main()
