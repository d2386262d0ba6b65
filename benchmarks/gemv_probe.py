"""The 7B decode GEMVs alone (issue 6): cuBLAS against evspec's fused Triton kernel.

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

SHAPES = {  # name: (N, K, norm prologue, residual epilogue)
    "qkv": (12288, 4096, True, False),
    "o": (4096, 4096, False, True),
    "gate_up": (22016, 4096, True, False),
    "down": (4096, 11008, False, True),
    "lm_head": (32000, 4096, True, False),
}
TINY = {"qkv": (96, 64, True, False), "o": (32, 64, False, True)}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--layers", type=int, default=32)
    p.add_argument("--rows", default="1,9")
    p.add_argument("--configs", default="32x128w4,64x128w4,16x256w4,32x256w8,64x64w4",
                   help="BLOCK_NxBLOCK_KwNUM_WARPS, comma separated")
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--tiny", action="store_true", help="small shapes (a CPU smoke run)")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    dev = torch.device(args.device)
    cuda = dev.type == "cuda"
    dtype = torch.bfloat16 if cuda else torch.float32
    configs = []
    for c in args.configs.split(","):
        bn, rest = c.split("x")
        bk, w = rest.split("w")
        configs.append((c, int(bn), int(bk), int(w)))
    out: dict = {"device": torch.cuda.get_device_name(dev) if cuda else "cpu", "torch": torch.__version__,
                 "dtype": str(dtype), "layers": args.layers, "triton_used": triton_available(dev), "shapes": {}}
    lines = []
    for name, (n, k, norm, res) in (TINY if args.tiny else SHAPES).items():
        ws = [torch.randn(n, k, device=dev, dtype=dtype) / k ** 0.5 for _ in range(args.layers)]
        nw = torch.ones(k, device=dev, dtype=dtype)
        gbytes = args.layers * n * k * ws[0].element_size() / 1e9
        for m in (int(r) for r in args.rows.split(",")):
            x = torch.randn(m, k, device=dev, dtype=dtype)
            r = torch.randn(m, n, device=dev, dtype=dtype) if res else None
            variants = {
                "cublas": lambda: [F.linear(x, w) for w in ws],
                "cublas+ops": lambda: [fused_linear_reference(x, w, nw if norm else None, 1e-5, r) for w in ws],
            }
            for label, bn, bk, warps in configs:
                variants[f"triton {label}"] = (
                    lambda bn=bn, bk=bk, warps=warps: [fused_linear(x, w, nw if norm else None, 1e-5, r, block_n=bn,
                                                                    block_k=bk, num_warps=warps) for w in ws])
            ref = fused_linear_reference(x, ws[0], nw if norm else None, 1e-5, r).float()
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
            lines.append(f"| {name} | {m} | {timed_rows['cublas']['ms']:.3f} ({timed_rows['cublas']['tb_s']:.2f}) | "
                         f"{timed_rows['cublas+ops']['ms']:.3f} | {best.removeprefix('triton ')}: "
                         f"{timed_rows[best]['ms']:.3f} ({timed_rows[best]['tb_s']:.2f}) |")
    print(f"{args.layers} weight copies per shape; ms per step (TB/s of weights); triton used: {out['triton_used']}")
    print("| projection | rows | cuBLAS | cuBLAS + separate ops | best fused Triton |\n|---|---:|---:|---:|---:|")
    print("\n".join(lines))
    write_json(out, args.json, "gemv_probe.json")
    return out


if __name__ == "__main__":
    main()
