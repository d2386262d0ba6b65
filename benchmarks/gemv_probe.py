"""The 7B decode GEMVs alone: cuBLAS against evspec's fused Triton kernel.

For each projection of a LLaMA-7B layer (q/k/v 12288×4096 and gate/up 22016×4096 with the
RMSNorm folded in; o 4096×4096 and down 4096×11008 with the residual add folded in; the LM
head 32000×4096) and for 1 and 9 token rows, this replays one CUDA graph over 32 distinct
weight copies (as the 32 layers read them: never from L2) and reports ms per step and the
weight bandwidth, for

* ``cublas``       – ``F.linear`` alone (what the engine's compiled step calls; its norm and
  residual kernels come on top of this figure);
* ``cublas+ops``   – the torch ops the kernel replaces (norm, linear, residual add);
* ``triton BNxBK/wW`` – :func:`evspec.models.fast.gemv.fused_linear` for each launch
  configuration in ``--configs``.

    PYTHONPATH=src python3 benchmarks/gemv_probe.py                 # H200, bf16
    PYTHONPATH=src python3 benchmarks/gemv_probe.py --device cpu --tiny
"""

from __future__ import annotations

import argparse

import torch
from torch.nn import functional as F

from evspec.models.fast.triton_support import available as triton_available
from evspec.models.fast.gemv import fused_linear, fused_linear_reference
from probe_common import median_ms, replayable, write_json  # a sibling module: benchmarks/ is the script's folder

SHAPES = {  # name: (N, K, norm prologue, residual epilogue, silu(gate)*up prologue)
    "qkv": (12288, 4096, True, False, False),
    "o": (4096, 4096, False, True, False),
    "gate_up": (22016, 4096, True, False, False),
    "down": (4096, 11008, False, True, True),
    "lm_head": (32000, 4096, True, False, False),
}
TINY = {"qkv": (96, 64, True, False, False), "down": (32, 64, False, True, True)}
#: ``--sweep``: every BLOCK_N x BLOCK_K (4K to 16K products a program) x warps x stages
SWEEP = [f"{bn}x{bk}w{w}s{s}" for bn in (4, 8, 16, 32) for bk in (256, 512, 1024)
         for w in (4, 8) for s in (1, 3) if 4096 <= bn * bk <= 16384]


def parse_config(label: str) -> tuple[int, int, int, int | None]:
    """``BNxBKwW[sS]`` -> (BLOCK_N, BLOCK_K, num_warps, num_stages or None for the default)."""
    bn, rest = label.split("x")
    bk, rest = rest.split("w")
    w, _, s = rest.partition("s")
    return int(bn), int(bk), int(w), int(s) if s else None


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--layers", type=int, default=32)
    p.add_argument("--rows", default="1,9")
    p.add_argument("--configs", default="default,32x128w4,64x128w4,16x256w4,32x256w8,64x64w4",
                   help="BLOCK_NxBLOCK_KwNUM_WARPS[sNUM_STAGES], comma separated; 'default': launch_config's")
    p.add_argument("--sweep", action="store_true", help="every configuration in SWEEP (with --rows 1: decode)")
    p.add_argument("--shapes", default=None, help="comma separated subset of the projections")
    p.add_argument("--no-pdl", action="store_true",
                   help="also time launch_config's configuration without programmatic dependent launch")
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--tiny", action="store_true", help="small shapes (a CPU smoke run)")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    dev = torch.device(args.device)
    cuda = dev.type == "cuda"
    dtype = torch.bfloat16 if cuda else torch.float32
    labels = ["default"] + SWEEP if args.sweep else args.configs.split(",")
    configs = [(c, *((None,) * 4 if c == "default" else parse_config(c))) for c in labels]
    shapes = TINY if args.tiny else SHAPES
    if args.shapes:
        shapes = {name: shapes[name] for name in args.shapes.split(",")}
    out: dict = {"device": torch.cuda.get_device_name(dev) if cuda else "cpu", "torch": torch.__version__,
                 "dtype": str(dtype), "layers": args.layers, "triton_used": triton_available(dev), "shapes": {}}
    lines = []
    for name, (n, k, norm, res, act) in shapes.items():
        ws = [torch.randn(n, k, device=dev, dtype=dtype) / k ** 0.5 for _ in range(args.layers)]
        nw = torch.ones(k, device=dev, dtype=dtype)
        gbytes = args.layers * n * k * ws[0].element_size() / 1e9
        for m in (int(r) for r in args.rows.split(",")):
            x = torch.randn(m, 2 * k if act else k, device=dev, dtype=dtype)
            r = torch.randn(m, n, device=dev, dtype=dtype) if res else None
            xin = x[:, :k]  # cuBLAS's input (the act's output has the same shape)
            variants = {
                "cublas": lambda: [F.linear(xin, w) for w in ws],
                "cublas+ops": lambda: [fused_linear_reference(x, w, nw if norm else None, 1e-5, r, gated_silu=act)
                                       for w in ws],
            }
            if args.no_pdl:
                variants["triton default, no PDL"] = lambda: [
                    fused_linear(x, w, nw if norm else None, 1e-5, r, gated_silu=act, use_pdl=False) for w in ws]
            for label, bn, bk, warps, stages in configs:
                variants[f"triton {label}"] = (
                    lambda bn=bn, bk=bk, warps=warps, stages=stages: [
                        fused_linear(x, w, nw if norm else None, 1e-5, r, gated_silu=act, block_n=bn, block_k=bk,
                                     num_warps=warps, num_stages=stages) for w in ws])
            ref = fused_linear_reference(x, ws[0], nw if norm else None, 1e-5, r, gated_silu=act).float()
            row = {}
            for label, fn in variants.items():
                try:
                    if label.startswith("triton"):
                        got = fn()[0].float()
                        row[f"{label} max_err"] = (got - ref).abs().max().item()
                    ms = median_ms(replayable(fn, cuda), args.repeats, cuda)
                    row[label] = {"ms": ms, "tb_s": gbytes / ms}  # GB/ms = TB/s
                except Exception as exc:  # a launch configuration the compiler rejects
                    row[label] = {"error": f"{type(exc).__name__}: {exc}"[:200]}
            out["shapes"][f"{name} M={m}"] = row
            timed_rows = {lab: v for lab, v in row.items() if isinstance(v, dict) and "ms" in v}
            best = min((lab for lab in timed_rows if lab.startswith("triton")), key=lambda lab: timed_rows[lab]["ms"])
            nopdl = timed_rows.get("triton default, no PDL")
            nopdl_txt = (f" (default {timed_rows['triton default']['ms']:.3f}, no PDL {nopdl['ms']:.3f})"
                         if nopdl else "")
            row["best"] = best.removeprefix("triton ")
            lines.append(f"| {name} | {m} | {timed_rows['cublas']['ms']:.3f} ({timed_rows['cublas']['tb_s']:.2f}) | "
                         f"{timed_rows['cublas+ops']['ms']:.3f} | {best.removeprefix('triton ')}: "
                         f"{timed_rows[best]['ms']:.3f} ({timed_rows[best]['tb_s']:.2f}){nopdl_txt} |")
    print(f"{args.layers} weight copies per shape; ms per step (TB/s of weights); triton used: {out['triton_used']}")
    print("| projection | rows | cuBLAS | cuBLAS + separate ops | best fused Triton |\n|---|---:|---:|---:|---:|")
    print("\n".join(lines))
    write_json(out, args.json, "gemv_probe.json")
    return out


if __name__ == "__main__":
    main()
