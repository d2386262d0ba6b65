"""Where one decode step's time goes: kernel time vs wall time, by kernel family.

The fast engine's graphed 7B decode step measures 5.6–5.8 ms against a 3.3 ms bandwidth
floor.  This profiles one step of the target on the fast path (fused weights) with and
without CUDA graphs under ``torch.profiler`` and reports, per step: the wall time, the sum
of device kernel times (the GPU busy time), the gap between them (launch / idle time that
graphs should remove), the kernels grouped into families (matmul, attention, norm / RoPE /
elementwise, sampling, copies) with their share, the top kernels by time, and the
effective bandwidth of the matmuls (weight bytes / matmul time) against the H200's
4.8 TB/s.  That says whether the remaining gap is in the GEMV kernels themselves or
between kernels.

    PYTHONPATH=src HF_HUB_OFFLINE=1 python3 benchmarks/fast_profile.py [--compiled]    # 7b, cuda, bf16
    PYTHONPATH=src HF_HUB_OFFLINE=1 python3 benchmarks/fast_profile.py --preset tiny-random --device cpu

On the CPU the "kernels" are the profiler's CPU operator times (self time), so the same
table shows where a CPU step goes.  Writes ``$OUT/fast_profile.json`` (or ``--json``).
"""

from __future__ import annotations

import argparse
import statistics
from collections import defaultdict
from typing import Any

import torch
from torch.profiler import ProfilerActivity, profile

from evspec.models.request import Request
from evspec.models.timing import sync
from evspec.loading import ModelSpec, load_models, random_images
from probe_common import median_ms, write_json  # a sibling module: benchmarks/ is the script's folder

FAMILIES = (  # first match wins; names are lower-cased kernel / operator names
    ("attention", ("flash", "fmha", "attention", "sdpa", "softmax")),
    ("matmul", ("gemm", "gemv", "cutlass", "xmma", "sm90", "nvjet", "matmul", "addmm", "mm", "linear", "bmm")),
    ("sampling", ("argmax", "topk", "sort", "multinomial", "max")),
    ("norm/rope/elementwise", ("triton_",)),  # inductor's fused kernels (names list every op, e.g. _to_copy)
    ("copy", ("copy", "memcpy", "memset", "cat", "index", "scatter", "gather", "fill")),
    ("norm/rope/elementwise", ("norm", "rsqrt", "pow", "mean", "mul", "add", "silu", "neg", "elementwise",
                               "vectorized", "reduce", "sigmoid", "exp", "sub", "div", "cos", "sin")),
)


def family(name: str) -> str:
    low = name.lower()
    for fam, keys in FAMILIES:
        if any(k in low for k in keys):
            return fam
    return "other"


def _weight_bytes(model: Any) -> int:
    """Bytes of the decoder's and LM head's matrices (what one decode step must read)."""
    mods = [model.decoder, model.lm_head]
    return sum(p.numel() * p.element_size() for m in mods for p in m.parameters() if p.ndim >= 2)


def timeline(events: list[Any], steps: int) -> dict[str, dict[str, float]]:
    """Per kernel name, from the device events in start order: launches per step, mean
    duration (us) and mean gap from the end of the kernel before it (us; negative: the two
    overlapped, as with programmatic dependent launch), and the gap summed per step (ms).
    The first kernel of the trace has no gap."""
    kernels = sorted((ev for ev in events if getattr(ev, "device_type", None) == torch.autograd.DeviceType.CUDA),
                     key=lambda ev: ev.time_range.start)
    out: dict[str, dict[str, float]] = {}
    prev_end = None
    for ev in kernels:
        row = out.setdefault(ev.name, {"per_step": 0.0, "mean_us": 0.0, "gap_before_us": 0.0, "gap_ms_per_step": 0.0})
        row["per_step"] += 1 / steps
        row["mean_us"] += ev.time_range.end - ev.time_range.start
        if prev_end is not None:
            row["gap_before_us"] += ev.time_range.start - prev_end
        prev_end = ev.time_range.end
    for row in out.values():
        n = row["per_step"] * steps
        row["gap_ms_per_step"] = row["gap_before_us"] / steps / 1e3
        row["mean_us"] /= n
        row["gap_before_us"] /= n
    return dict(sorted(out.items(), key=lambda kv: -kv[1]["gap_ms_per_step"]))


def profile_mode(model: Any, request: Request, *, graphs: bool, steps: int, top: int, rows: int = 1,
                 **fast: Any) -> dict[str, Any]:
    """Profile ``steps`` decode steps (``rows`` > 1: score steps of that many tokens) at the
    end of the prompt (rolled back after each); ``fast``: more ``enable_fast`` options
    (``compile``: compiled during the warm-up steps, not profiled; ``kernels``, ``attention``)."""
    device = model.device
    model.disable_fast()
    model.enable_fast(cuda_graphs=graphs and device.type == "cuda", max_score_tokens=max(2, rows), **fast)
    state = model.prefill(request)
    tok = torch.full((rows,), int(state.last_logits.argmax()))

    def stepping(token: torch.Tensor):
        def step() -> None:
            model.score(state, token)
            model.rollback(state, rows)
        return step

    step = stepping(tok)
    for _ in range(5):  # capture / warm up
        step()
    sync(device)
    on_cuda = device.type == "cuda"
    wall = median_ms(step, steps, on_cuda, warmup=0)  # warmed up above
    host: dict[str, float] = {}  # where the host's share of a synchronous step goes
    if graphs and on_cuda:
        runner = model.fast._slot(state.cache).runner
        graph = runner._graphs[("tokens", *runner.plan(rows, state.length))][0]
        host = {"step_ms": wall, "step_token_on_device_ms": median_ms(stepping(tok.to(device)), steps, on_cuda),
                "graph_replay_ms": median_ms(graph.replay, steps, on_cuda)}
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if on_cuda else [])
    with profile(activities=acts) as prof:
        for _ in range(steps):
            step()
        sync(device)
    per_kernel: dict[str, float] = defaultdict(float)
    launches = 0.0
    for ev in prof.key_averages():
        if on_cuda:
            us = getattr(ev, "self_device_time_total", None)
            if us is None:
                us = getattr(ev, "self_cuda_time_total", 0.0)
            is_kernel = getattr(ev, "device_type", None) == torch.autograd.DeviceType.CUDA
        else:
            us, is_kernel = ev.self_cpu_time_total, not ev.key.startswith(("ProfilerStep", "cudaGraph"))
        if is_kernel and us > 0:
            per_kernel[ev.key] += us / 1e3 / steps  # ms per step
            launches += ev.count / steps
    kernel_ms = sum(per_kernel.values())
    fams: dict[str, float] = defaultdict(float)
    for name, ms in per_kernel.items():
        fams[family(name)] += ms
    matmul_ms = fams.get("matmul", 0.0)
    wbytes = _weight_bytes(model)
    if hasattr(model, "release"):
        model.release(state)
    return {
        "graphs": graphs and on_cuda,
        "position": int(state.length),
        "wall_ms": wall,
        "kernel_ms": kernel_ms,
        "kernels_per_step": launches,
        "host": host,
        "timeline": {name: row for name, row in list(timeline(prof.events(), steps).items())[:top]} if on_cuda else {},
        "gap_ms": wall - kernel_ms,
        "families_ms": dict(sorted(fams.items(), key=lambda kv: -kv[1])),
        "top_kernels_ms": dict(sorted(per_kernel.items(), key=lambda kv: -kv[1])[:top]),
        "weight_bytes": wbytes,
        "matmul_bandwidth_tb_s": (wbytes / (matmul_ms * 1e-3) / 1e12) if matmul_ms > 0 else None,
        "floor_ms_at_4_8_tb_s": wbytes / 4.8e12 * 1e3,
    }


def table(results: dict[str, Any]) -> str:
    lines = ["| mode | wall ms/step | kernel ms/step | kernels/step | gap ms | matmul TB/s | floor ms (4.8 TB/s) |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for mode, r in results["modes"].items():
        bw = r["matmul_bandwidth_tb_s"]
        lines.append(f"| {mode} | {r['wall_ms']:.3f} | {r['kernel_ms']:.3f} | {r['kernels_per_step']:.0f} | "
                     f"{r['gap_ms']:.3f} | "
                     f"{'–' if bw is None else f'{bw:.2f}'} | {r['floor_ms_at_4_8_tb_s']:.3f} |")
    for mode, r in results["modes"].items():
        if r.get("host"):
            h = r["host"]
            lines += ["", f"**{mode}: a synchronous step, host included** — `score` + `rollback` with a CPU token "
                      f"{h['step_ms']:.3f} ms, with the token on the device {h['step_token_on_device_ms']:.3f} ms, "
                      f"the step's CUDA graph replayed alone {h['graph_replay_ms']:.3f} ms"]
        lines += ["", f"**{mode}: families (ms per step, share of kernel time)**", ""]
        total = max(r["kernel_ms"], 1e-9)
        lines += [f"* {fam}: {ms:.3f} ({ms / total:.0%})" for fam, ms in r["families_ms"].items()]
        lines += ["", f"**{mode}: top kernels**", "", "| kernel | ms/step | family |", "|---|---:|---|"]
        lines += [f"| `{name[:90]}` | {ms:.4f} | {family(name)} |" for name, ms in r["top_kernels_ms"].items()]
        if r.get("timeline"):
            lines += ["", f"**{mode}: kernels in start order (mean duration, mean gap from the kernel before; "
                      "largest gap sum first)**", "", "| kernel | per step | mean us | gap before us | gap ms/step |",
                      "|---|---:|---:|---:|---:|"]
            lines += [f"| `{name[:70]}` | {t['per_step']:.0f} | {t['mean_us']:.2f} | {t['gap_before_us']:.2f} | "
                      f"{t['gap_ms_per_step']:.3f} |" for name, t in r["timeline"].items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="7b", help="target preset (7b, tiny-random)")
    p.add_argument("--device", default="cuda")
    p.add_argument("--dtype", default="auto", help="auto (bf16 on CUDA, fp32 on CPU), bfloat16, float32")
    p.add_argument("--steps", type=int, default=20, help="profiled decode steps per mode")
    p.add_argument("--rows", type=int, default=1, help="tokens per profiled step (1: decode; more: a score step)")
    p.add_argument("--top", type=int, default=25, help="kernels listed per mode")
    p.add_argument("--compiled", action="store_true",
                   help="also profile the compiled variant (enable_fast(compile=True), torch.compile's default mode)")
    p.add_argument("--attention", default="auto", help="attention kind of the compiled and Triton modes")
    p.add_argument("--triton", action="store_true",
                   help="also profile the Triton layer kernels (enable_fast(kernels='triton'))")
    p.add_argument("--only-new", action="store_true", help="skip the fused eager / graphed modes")
    p.add_argument("--json", default=None, help="output JSON (default $OUT/fast_profile.json)")
    args = p.parse_args(argv)
    if min(args.steps, args.top, args.rows) < 1:
        p.error("--steps, --top and --rows must be >= 1")
    loaded = load_models(ModelSpec(target=args.preset, device=args.device, dtype=args.dtype))
    target, device, dtype = loaded.target, loaded.device, loaded.dtype
    size = target.config.vision_config.image_size
    request = Request("What is moving in the scene?", video=random_images(target.num_frames, size, 0))
    where = "CUDA graphs" if device.type == "cuda" else "CPU"
    modes: dict[str, dict[str, Any]] = {}
    if not args.only_new:
        modes.update({"fused, eager": {"graphs": False}, "fused, CUDA graphs": {"graphs": True}}
                     if device.type == "cuda" else {"fast, CPU": {"graphs": False}})
    if args.compiled:
        modes[f"compiled@{args.attention}, {where}"] = {"graphs": True, "compile": True, "attention": args.attention}
    if args.triton:
        modes[f"triton@{args.attention}, {where}"] = {"graphs": True, "kernels": "triton", "attention": args.attention}
    results: dict[str, Any] = {
        "preset": args.preset, "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "dtype": str(dtype), "torch": torch.__version__, "steps": args.steps,
        "rows": args.rows,
        "modes": {name: profile_mode(target, request, steps=args.steps, top=args.top, rows=args.rows, **opts)
                  for name, opts in modes.items()},
    }
    text = table(results)
    print(text)
    dest = write_json(results, args.json, "fast_profile.json")
    print(f"wrote {dest}")
    return results


if __name__ == "__main__":
    main()
