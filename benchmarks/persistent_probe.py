"""A 7B decode step's 32 layers: the persistent kernel (one launch a layer) against the
four-kernel Triton layer with split-KV attention (six launches a layer), issue 6.

Random bf16 weights with the LLaMA-7B shapes (32 distinct layers, so no weight comes from
L2), one token at position ``--position`` over ``--kv-rows`` cache rows, each variant
replayed as one CUDA graph.  Checks first that every persistent variant gives the same
hidden state, bit for bit, as the four-kernel layer (both run the same tile functions) and
that no wait timed out; then reports ms per step (the layers only: no embedding, final norm
or LM head) for the launch grids in ``--grids`` and attention pipeline depths in
``--attention-stages``.

    PYTHONPATH=src python3 benchmarks/persistent_probe.py                  # H200
    TRITON_INTERPRET=1 PYTHONPATH=src python3 benchmarks/persistent_probe.py --device cpu --tiny
"""

from __future__ import annotations

import argparse

import torch

from evspec.models.fast import persistent
from evspec.models.fast.decode_attention import split_kv_attention
from evspec.models.fast.fused import FusedLayer
from evspec.models.fast.ops import rope_tables, rotation_sin
from evspec.models.fast.triton_layer import triton_attention_inputs, triton_attention_output_and_mlp
from evspec.models.fast.triton_support import available
from probe_common import median_ms, replayable, write_json  # a sibling module: benchmarks/ is the script's folder

SEVEN_B = dict(hidden=4096, inter=11008, heads=32, kv_heads=32, layers=32)
TINY = dict(hidden=128, inter=96, heads=2, kv_heads=2, layers=2)


def _layers(shape: dict, dtype: torch.dtype, device: torch.device) -> list[FusedLayer]:
    h, i, heads, kv = shape["hidden"], shape["inter"], shape["heads"], shape["kv_heads"]
    d = h // heads

    def w(n: int, k: int) -> torch.Tensor:
        return (torch.randn(n, k, device=device) * k ** -0.5).to(dtype)

    def norm() -> torch.Tensor:
        return (1 + 0.1 * torch.randn(h, device=device)).to(dtype)

    return [FusedLayer(qkv_weight=w((heads + 2 * kv) * d, h), qkv_bias=None, o_weight=w(h, heads * d), o_bias=None,
                       gate_up_weight=w(2 * i, h), gate_up_bias=None, down_weight=w(h, i), down_bias=None,
                       ln1_weight=norm(), ln1_eps=1e-5, ln2_weight=norm(), ln2_eps=1e-5, act="silu")
            for _ in range(shape["layers"])]


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--tiny", action="store_true", help="a two-layer model of 128 wide (CPU, TRITON_INTERPRET=1)")
    p.add_argument("--position", type=int, default=2103)
    p.add_argument("--kv-rows", type=int, default=2304, help="attended cache rows (the engine's bucket)")
    p.add_argument("--grids", default="auto,132,264,396,528", help="thread blocks of the persistent kernel")
    p.add_argument("--attention-stages", default="2,1,3")
    p.add_argument("--repeats", type=int, default=50)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    device = torch.device(args.device)
    if not available(device):
        raise SystemExit("needs Triton on CUDA, or TRITON_INTERPRET=1")
    cuda = device.type == "cuda"
    shape = TINY if args.tiny else SEVEN_B
    position, kv_rows = (37, 64) if args.tiny else (args.position, args.kv_rows)
    dtype = torch.bfloat16 if cuda else torch.float32
    torch.manual_seed(0)
    layers = _layers(shape, dtype, device)
    heads, kv_heads, d = shape["heads"], shape["kv_heads"], shape["hidden"] // shape["heads"]
    cap = max(kv_rows, position + 1)
    caches = [(torch.randn(kv_heads, cap, d, device=device).to(dtype), torch.randn(kv_heads, cap, d, device=device)
               .to(dtype)) for _ in layers]
    x0 = torch.randn(1, shape["hidden"], device=device).to(dtype)
    pos = torch.tensor([position], device=device)
    inv_freq = 1.0 / (10000 ** (torch.arange(0, d, 2, device=device).float() / d))
    cos, sin = rope_tables(pos, inv_freq, 1.0, dtype)
    sin = rotation_sin(sin)
    scale = d ** -0.5
    sync = persistent.new_sync(kv_heads, device)

    def four_kernels() -> torch.Tensor:
        x = x0
        for f, (kc, vc) in zip(layers, caches):
            q = triton_attention_inputs(x, f.ln1_weight, f.qkv_weight, None, cos, sin, kc, vc, pos, f.ln1_eps,
                                        heads, kv_heads)
            out = split_kv_attention(q, kc[:, :kv_rows], vc[:, :kv_rows], pos, kv_rows, scale)
            x = triton_attention_output_and_mlp(x, out, f.o_weight, None, f.ln2_weight, f.gate_up_weight, None,
                                                f.down_weight, None, f.ln2_eps, "silu")
        return x

    def one_kernel(grid: int | None, stages: int):
        def run() -> torch.Tensor:
            x = x0
            for f, (kc, vc) in zip(layers, caches):
                x = persistent.decode_layer(x, f, kc, vc, cos, sin, pos, kv_rows, scale, heads, kv_heads, sync,
                                            grid=grid, attention_stages=stages)
            return x
        return run

    want = four_kernels()
    rows: dict[str, dict] = {}
    rows["four kernels + split-KV"] = {"ms": median_ms(replayable(four_kernels, cuda), args.repeats, cuda)}
    grids = [None if g == "auto" else int(g) for g in args.grids.split(",")] if cuda else [None]
    stages_list = [int(s) for s in args.attention_stages.split(",")] if cuda else [2]
    for stages in stages_list:
        for grid in grids:
            label = f"persistent grid {grid or 'auto'} att{stages}"
            run = one_kernel(grid, stages)
            got = run()
            persistent.check(sync)
            same = bool(torch.equal(got, want))
            entry = {"same_as_four_kernels": same, "max_abs_diff": float((got.float() - want.float()).abs().max())}
            entry["ms"] = median_ms(replayable(run, cuda), args.repeats, cuda)
            persistent.check(sync)
            rows[label] = entry
            print(f"{label:34s} {entry['ms']:.3f} ms  same={same}", flush=True)
    print(f"{'four kernels + split-KV':34s} {rows['four kernels + split-KV']['ms']:.3f} ms")
    out = {"device": torch.cuda.get_device_name(device) if cuda else "cpu", "dtype": str(dtype),
           "torch": torch.__version__, "shape": shape, "position": position, "kv_rows": kv_rows,
           "resident_grid": {str(k[:-1]): v for k, v in persistent._RESIDENT.items()}, "rows": rows}
    path = write_json(out, args.json, "persistent_probe.json")
    print("wrote", path)
    return out


if __name__ == "__main__":
    main()
