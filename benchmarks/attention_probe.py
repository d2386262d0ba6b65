"""Decode attention alone, at the 7B shapes: which kernel reads the KV fastest?

One decode or score step attends ``T`` queries per head over ``kv_rows`` cache rows in each of
32 layers.  This times that part alone, in a CUDA graph (as the engine replays it), for:

* ``sdpa``   – ``scaled_dot_product_attention`` with the engine's additive mask;
* ``matmul`` – two batched matmuls and a float32 softmax (the engine's ``matmul`` kind);
* ``flex``   – ``torch.compile``-d FlexAttention with the causal limit as a ``score_mod`` over
  a device-side position;
* ``splitkv`` – evspec's split-KV kernels (``evspec.models.fast.decode_attention``);
  ``--splitkv-sweep`` adds ``splitkv bBnNwWsS`` for every launch configuration in SPLITKV_SWEEP
  (B thread blocks wanted, N keys per iteration, W warps, S pipeline stages).

Each layer has its own K/V (1.2 GB in all at 2304 rows: more than the L2 many times over),
so the figure is a bandwidth figure: ms per step and GB/s of K/V read.  Outputs are checked
against ``matmul`` in float32 first.

    PYTHONPATH=src python3 benchmarks/attention_probe.py                       # H200, bf16
    PYTHONPATH=src python3 benchmarks/attention_probe.py --device cpu --layers 2 --rows 64 --heads 4 --dim 16
"""

from __future__ import annotations

import argparse
from typing import Callable

import torch
import torch.nn.functional as F
from torch.nn.attention.flex_attention import flex_attention

from evspec.models.fast.decode_attention import split_kv_attention
from evspec.models.fast.ops import attention_bias
from probe_common import median_ms, replayable, write_json  # a sibling module: benchmarks/ is the script's folder


SPLITKV_SWEEP = [(b, n, w, s) for b in (132, 264, 528) for n in (32, 64, 128) for w in (4, 8) for s in (2, 3)]


def make_kernels(pos: torch.Tensor, scale: float, compile_flex: bool, sweep: bool = False) -> dict[str, Callable]:
    """``kind -> f(q [1,H,T,D], k, v [1,H,S,D], mask [T,S]) -> [1,H,T,D]``."""
    flex = torch.compile(flex_attention, dynamic=False) if compile_flex else flex_attention

    def sdpa(q, k, v, mask):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)

    def matmul(q, k, v, mask):
        scores = torch.matmul(q, k.transpose(-1, -2)) * scale + mask
        return torch.matmul(torch.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype), v)

    def causal(score, b, h, q_idx, kv_idx):
        return torch.where(kv_idx <= pos + q_idx, score, -float("inf"))

    def flex_kind(q, k, v, mask):
        return flex(q, k, v, score_mod=causal, scale=scale)

    def splitkv(q, k, v, mask):
        return split_kv_attention(q[0], k[0], v[0], pos, k.shape[2], scale)[None]

    kinds = {"sdpa": sdpa, "matmul": matmul, "flex": flex_kind, "splitkv": splitkv}
    for b, n, w, st in SPLITKV_SWEEP if sweep else ():
        kinds[f"splitkv b{b}n{n}w{w}s{st}"] = (
            lambda q, k, v, mask, b=b, n=n, w=w, st=st: split_kv_attention(
                q[0], k[0], v[0], pos, k.shape[2], scale, blocks_wanted=b, block_n=n, num_warps=w,
                num_stages=st)[None])
    return kinds


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--layers", type=int, default=32)
    p.add_argument("--heads", type=int, default=32)
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--rows", type=int, default=2304, help="attended cache rows (the kv bucket)")
    p.add_argument("--position", type=int, default=2103, help="position of the first query")
    p.add_argument("--queries", default="1,9", help="step sizes T")
    p.add_argument("--repeats", type=int, default=50)
    p.add_argument("--splitkv-sweep", action="store_true", help="also every split-KV launch configuration")
    p.add_argument("--kinds", default=None, help="comma separated kinds to run (default: all)")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    dev = torch.device(args.device)
    cuda = dev.type == "cuda"
    sizes = [int(t) for t in args.queries.split(",")]
    if args.position + max(sizes) > args.rows:
        p.error("--position + the largest T must fit in --rows")
    scale = args.dim ** -0.5
    pos = torch.tensor(args.position, device=dev)
    out: dict = {"device": torch.cuda.get_device_name(dev) if cuda else "cpu", "torch": torch.__version__,
                 "layers": args.layers, "heads": args.heads, "dim": args.dim, "rows": args.rows,
                 "position": args.position, "results": {}}
    gen = torch.Generator(device=dev).manual_seed(0)
    # correctness, float32, one layer
    k32 = torch.randn(1, args.heads, args.rows, args.dim, device=dev, generator=gen)
    v32 = torch.randn_like(k32)
    kernels32 = make_kernels(pos, scale, compile_flex=cuda, sweep=args.splitkv_sweep)
    if args.kinds:  # matmul stays: it is the reference
        kernels32 = {k: f for k, f in kernels32.items() if k.split()[0] in ("matmul", *args.kinds.split(","))}
    for t in sizes:
        q = torch.randn(1, args.heads, t, args.dim, device=dev, generator=gen)
        mask = attention_bias(pos + torch.arange(t, device=dev), args.rows, torch.float32)
        ref = kernels32["matmul"](q, k32, v32, mask)
        for kind, fn in kernels32.items():
            row = out["results"].setdefault(kind, {})
            try:
                row[f"T{t}_max_err_fp32"] = (fn(q, k32, v32, mask) - ref).abs().max().item()
            except Exception as exc:  # a kernel that does not build here: recorded, the others still run
                row["error"] = f"{type(exc).__name__}: {exc}"[:300]
    dtype = torch.bfloat16 if cuda else torch.float32
    ks = [torch.randn(1, args.heads, args.rows, args.dim, device=dev, dtype=dtype, generator=gen)
          for _ in range(args.layers)]
    vs = [torch.randn_like(k) for k in ks]
    kv_bytes = 2 * args.layers * args.heads * args.rows * args.dim * ks[0].element_size()
    kernels = make_kernels(pos, scale, compile_flex=cuda, sweep=args.splitkv_sweep)
    kernels = {k: f for k, f in kernels.items() if k in kernels32}
    for t in sizes:
        q = torch.randn(1, args.heads, t, args.dim, device=dev, dtype=dtype, generator=gen)
        mask = attention_bias(pos + torch.arange(t, device=dev), args.rows, dtype)
        for kind, fn in kernels.items():
            if "error" in out["results"][kind]:
                continue

            def step() -> None:
                for k, v in zip(ks, vs):
                    fn(q, k, v, mask)
            ms = median_ms(replayable(step, cuda), args.repeats, cuda)
            out["results"][kind][f"T{t}_ms"] = ms
            out["results"][kind][f"T{t}_gb_s"] = kv_bytes / (ms * 1e-3) / 1e9
    lines = ["| kernel | " + " | ".join(f"T={t} ms | T={t} GB/s | T={t} max err (fp32)" for t in sizes) + " |",
             "|---|" + "---:|---:|---:|" * len(sizes)]
    for kind, r in out["results"].items():
        if "error" in r:
            lines.append(f"| {kind} | failed: {r['error']} |")
            continue
        cells = [f"{r[f'T{t}_ms']:.3f} | {r[f'T{t}_gb_s']:.0f} | {r[f'T{t}_max_err_fp32']:.1e}" for t in sizes]
        lines.append(f"| {kind} | " + " | ".join(cells) + " |")
    print(f"K/V read per step: {kv_bytes / 1e9:.2f} GB ({args.layers} layers x {args.rows} rows)")
    print("\n".join(lines))
    write_json(out, args.json, "attention_probe.json")
    return out


if __name__ == "__main__":
    main()
