"""One LLaMA layer of a decode step as one persistent Triton kernel.

The four-kernel layer (``triton_layer.py``) plus split-KV attention is six kernels a layer,
~200 a step; on the H200 their sum is ≈ 3.9 ms of a 4.4 ms step and the rest is spent at the
boundaries, where each kernel drains and the next fills the memory pipeline again
(benchmarks/fast_engine.md, round 4).  Here a layer is one launch whose thread blocks stay
resident and walk five phases, each a list of tiles dealt round-robin over the blocks:

    A  q/k/v: RMSNorm + GEMV + RoPE + KV-cache write   (``triton_layer.qkv_tile``)
    B  split-KV attention chunks; the last chunk of a KV head to finish merges the head
       (``decode_attention.attention_split`` / ``attention_merge``)
    C  o GEMV + residual, D  RMSNorm + gate/up GEMV, E  silu·up + down GEMV + residual
       (``gemv.linear_tile``)

Between phases there is no kernel boundary but a counter: every tile adds one when its
stores are done (``triton_support.arrive``, release), and a block's first tile of the next
phase reads its first weight tile, then spins until the previous phase's counter is full
(``wait_for``, acquire) — the weights stream while the phase drains.  Activation loads
bypass L1 (``.cg``): other multiprocessors wrote them during this kernel.  The last tile of
phase E sets the counters back to zero for the next layer (the next launch waits for this
one through PDL).  Blocks only ever wait for tiles of earlier phases, which blocks that are
already running hold, so the kernel cannot deadlock as long as every block is resident: the
grid is at most what the multiprocessors hold at once (from the compiled kernel's registers
and shared memory) and at most phase E's tile count.  A wait that never ends gives up after
``SPIN_LIMIT`` polls and raises an error slot that :func:`check` reads, instead of hanging.

Numerics are the four-kernel layer's (the same tile functions), so the layer equals
``layer.py``'s functions with split-KV attention (the CPU tests, ``TRITON_INTERPRET=1``, run
one block: the interpreter runs blocks one after another, so more would spin).
"""

from __future__ import annotations

import torch

from evspec.models.fast.decode_attention import BLOCK_N as ATT_BLOCK_N, choose_splits, fits
from evspec.models.fast.fused import FusedLayer
from evspec.models.fast.gemv import launch_config
from evspec.models.fast.triton_layer import rotary_split, supported
from evspec.models.fast.triton_support import available, pdl, pdl_release, tl, triton

#: SYNC slots: 0 the error flag, 1..5 tiles done in phases A..E (2: KV heads merged),
#: 6.. chunks done per KV head
ERROR_SLOT, HEAD_SLOTS = 0, 6
#: shared memory a block reserves beyond the kernel's (CUDA's per-block reservation)
_RESERVED_SMEM = 1024

if triton is not None:
    from evspec.models.fast.decode_attention import attention_merge, attention_split
    from evspec.models.fast.gemv import linear_tile
    from evspec.models.fast.triton_layer import qkv_tile
    from evspec.models.fast.triton_support import arrive

    _HEAD_SLOTS = tl.constexpr(HEAD_SLOTS)

    @triton.jit
    def _decode_layer(X, NW1, WQKV, COS, SIN, POS, Q, KC, VC, OP, LSE, ATT, WO, X1, NW2, WGU, GU, WD, Y, SYNC,
                      kv_rows, scale, eps1, eps2, stride_ch, stride_cr,
                      H: tl.constexpr, INTER: tl.constexpr, D: tl.constexpr, HQ: tl.constexpr, HKV: tl.constexpr,
                      SPLIT: tl.constexpr, QKV_K: tl.constexpr, QKV_STAGES: tl.constexpr,
                      SPLITS: tl.constexpr, CHUNK: tl.constexpr, ATT_M: tl.constexpr, ATT_N: tl.constexpr,
                      ATT_S: tl.constexpr,
                      O_N: tl.constexpr, O_K: tl.constexpr, O_STAGES: tl.constexpr,
                      GU_N: tl.constexpr, GU_K: tl.constexpr, GU_STAGES: tl.constexpr,
                      DN_N: tl.constexpr, DN_K: tl.constexpr, DN_STAGES: tl.constexpr,
                      IEEE: tl.constexpr, PDL: tl.constexpr, GRID: tl.constexpr):
        pdl_release(PDL)
        pid = tl.program_id(0)
        GROUPS: tl.constexpr = HQ // HKV
        A: tl.constexpr = HQ * D  # attention output width (o's input)
        N_QKV: tl.constexpr = (HQ + 2 * HKV) * SPLIT
        N_ATT: tl.constexpr = HKV * SPLITS
        N_O: tl.constexpr = (H + O_N - 1) // O_N
        N_GU: tl.constexpr = (2 * INTER + GU_N - 1) // GU_N
        N_DN: tl.constexpr = (H + DN_N - 1) // DN_N
        QKV_EVEN: tl.constexpr = H % QKV_K == 0
        O_EVEN: tl.constexpr = (H % O_N == 0) and (A % O_K == 0)
        GU_EVEN: tl.constexpr = ((2 * INTER) % GU_N == 0) and (H % GU_K == 0)
        DN_EVEN: tl.constexpr = (H % DN_N == 0) and (INTER % DN_K == 0)
        for j in range(0, N_QKV, GRID):  # A: after the previous kernel (PDL)
            t = j + pid
            if t < N_QKV:
                qkv_tile(t, X, NW1, WQKV, COS, SIN, POS, Q, KC, VC, 1, eps1,
                         H, H, D, D, D, stride_ch, stride_cr,
                         H, D, HQ, HKV, SPLIT, IEEE, QKV_STAGES, PDL, QKV_EVEN, 1, QKV_K)
                arrive(SYNC, 1)
        for j in range(0, N_ATT, GRID):  # B: after every q/k/v tile
            t = j + pid
            if t < N_ATT:
                h = t // SPLITS
                attention_split(h, t % SPLITS, Q, KC, VC, POS, OP, LSE, kv_rows, scale,
                                D, D, stride_ch, stride_cr, stride_ch, stride_cr, SYNC, 1, N_QKV, j == 0,
                                1, GROUPS, SPLITS, D, CHUNK, ATT_M, ATT_N, IEEE, 2, ".cg")
                if arrive(SYNC, _HEAD_SLOTS + h) == SPLITS - 1:  # the head's last chunk merges it
                    for r in range(GROUPS):
                        attention_merge(h, r, OP, LSE, ATT, D, D, 1, GROUPS, SPLITS, D, ATT_M, ATT_S, ".cg")
                    tl.store(SYNC + _HEAD_SLOTS + h, 0)
                    arrive(SYNC, 2)
        for j in range(0, N_O, GRID):  # C: after every head's merge
            t = j + pid
            if t < N_O:
                linear_tile(t, ATT, WO, ATT, X, X1, 1, H, eps1, A, A, H, H, SYNC, 2, HKV, j == 0,
                            A, False, False, True, IEEE, O_EVEN, O_STAGES, 2, ".cg", 1, O_N, O_K)
                arrive(SYNC, 3)
        for j in range(0, N_GU, GRID):  # D
            t = j + pid
            if t < N_GU:
                linear_tile(t, X1, WGU, NW2, X1, GU, 1, 2 * INTER, eps2, H, H, H, 2 * INTER, SYNC, 3, N_O, j == 0,
                            H, True, False, False, IEEE, GU_EVEN, GU_STAGES, 2, ".cg", 1, GU_N, GU_K)
                arrive(SYNC, 4)
        for j in range(0, N_DN, GRID):  # E
            t = j + pid
            if t < N_DN:
                linear_tile(t, GU, WD, GU, X1, Y, 1, H, eps2, 2 * INTER, INTER, H, H, SYNC, 4, N_GU, j == 0,
                            INTER, False, True, True, IEEE, DN_EVEN, DN_STAGES, 2, ".cg", 1, DN_N, DN_K)
                if arrive(SYNC, 5) == N_DN - 1:  # the layer's last tile: counters back to zero
                    for slot in range(1, 6):
                        tl.store(SYNC + slot, 0)


def why_not(head_dim: int, num_heads: int, num_kv_heads: int, act: str, biases: bool) -> str | None:
    """Why a model's decode steps cannot run the persistent layer (None: they can)."""
    why = supported(head_dim, act, biases)
    if why is None and not fits(num_heads, num_kv_heads, 1, head_dim):
        why = f"attention of {num_heads} heads over {num_kv_heads} KV heads"
    return why


def new_sync(num_kv_heads: int, device: torch.device) -> torch.Tensor:
    """The counters one model's layers share (they run one after another on a stream)."""
    return torch.zeros(HEAD_SLOTS + num_kv_heads, dtype=torch.int32, device=device)


def check(sync: torch.Tensor) -> None:
    """Raise if a wait of the persistent kernel gave up (synchronises with the device)."""
    if int(sync[ERROR_SLOT]) != 0:
        raise RuntimeError(
            "the persistent decode layer timed out waiting for a phase (its thread blocks were not all "
            "resident); run with kernels='triton' instead"
        )


def _resident(compiled, device: torch.device) -> int:
    """Blocks of ``compiled`` one multiprocessor of ``device`` holds at once."""
    if getattr(compiled, "n_regs", None) is None:
        compiled._init_handles()  # Triton reads the register count when it loads the binary
    props = torch.cuda.get_device_properties(device)
    warps = compiled.metadata.num_warps
    regs_per_warp = -(-max(compiled.n_regs, 1) * 32 // 256) * 256  # allocated 256 registers at a time
    by_regs = getattr(props, "regs_per_multiprocessor", 65536) // (regs_per_warp * warps)
    smem = compiled.metadata.shared + _RESERVED_SMEM
    by_smem = getattr(props, "shared_memory_per_multiprocessor", 233472) // smem
    by_threads = getattr(props, "max_threads_per_multi_processor", 2048) // (32 * warps)
    return max(1, min(by_regs, by_smem, by_threads))


#: (shapes, launch constants, device) -> blocks resident at once (compiling the kernel to know)
_RESIDENT: dict[tuple, int] = {}


def _grid(key: tuple, device: torch.device, compile_kernel) -> int:
    """Thread blocks to launch: as many as are resident at once (one on the interpreter,
    which runs blocks in turn: see the module docstring)."""
    if device.type != "cuda":
        return 1
    if key not in _RESIDENT:
        sms = torch.cuda.get_device_properties(device).multi_processor_count
        _RESIDENT[key] = _resident(compile_kernel(), device) * sms
    return _RESIDENT[key]


def decode_layer(
    x: torch.Tensor,  # [1, H]
    f: FusedLayer,
    k_cache: torch.Tensor,  # [Hkv, capacity, D]
    v_cache: torch.Tensor,
    cos: torch.Tensor,  # [1, D]
    sin: torch.Tensor,  # [1, D], rotation_sin
    positions: torch.Tensor,  # [1] int64
    kv_rows: int,
    scale: float,
    num_heads: int,
    num_kv_heads: int,
    sync: torch.Tensor,
    *,
    grid: int | None = None,
    attention_stages: int = 2,
) -> torch.Tensor:
    """One decoder layer of a one-token step in one kernel -> the layer's output ``[1, H]``
    (and the token's keys/values in the caches).  ``grid``: thread blocks (default: all that
    are resident at once, see the module docstring); ``attention_stages``: the pipeline
    depth of the attention loop (the kernel's ``num_stages``)."""
    if not available(x.device):
        raise RuntimeError("the persistent decode layer needs Triton on CUDA (or TRITON_INTERPRET=1)")
    if x.shape[0] != 1:
        raise ValueError(f"the persistent decode layer takes one token, got {x.shape[0]}")
    hidden = x.shape[1]
    head_dim = k_cache.shape[-1]
    inter = f.down_weight.shape[1]
    if k_cache.stride() != v_cache.stride() or k_cache.stride(-1) != 1:
        raise ValueError("the K and V caches must share strides with rows contiguous")
    x, cos, sin = x.contiguous(), cos.contiguous(), sin.contiguous()
    dev, dt = x.device, x.dtype
    split = rotary_split(head_dim, 1)
    qkv_n, qkv_k, warps, qkv_stages = launch_config(1, f.qkv_weight.shape[0], hidden)
    o_n, o_k, _, o_stages = launch_config(1, hidden, num_heads * head_dim)
    gu_n, gu_k, _, gu_stages = launch_config(1, 2 * inter, hidden)
    dn_n, dn_k, _, dn_stages = launch_config(1, hidden, inter)
    tiles_e = -(-hidden // dn_n)
    splits, chunk = choose_splits(kv_rows, num_kv_heads)
    att_m = 16
    q = torch.empty(num_heads, 1, head_dim, dtype=dt, device=dev)
    o_part = torch.empty(num_kv_heads * splits * att_m, head_dim, dtype=torch.float32, device=dev)
    lse = torch.empty(num_kv_heads * splits * att_m, dtype=torch.float32, device=dev)
    att = torch.empty(num_heads * head_dim, dtype=dt, device=dev)
    x1 = torch.empty(1, hidden, dtype=dt, device=dev)
    gate_up = torch.empty(1, 2 * inter, dtype=dt, device=dev)
    y = torch.empty(1, hidden, dtype=dt, device=dev)
    chained = pdl(dev)
    args = (x, f.ln1_weight, f.qkv_weight, cos, sin, positions, q, k_cache, v_cache, o_part, lse, att,
            f.o_weight, x1, f.ln2_weight, f.gate_up_weight, gate_up, f.down_weight, y, sync,
            kv_rows, float(scale), float(f.ln1_eps), float(f.ln2_eps), k_cache.stride(0), k_cache.stride(1))
    consts = dict(H=hidden, INTER=inter, D=head_dim, HQ=num_heads, HKV=num_kv_heads,
                  SPLIT=split, QKV_K=qkv_k, QKV_STAGES=qkv_stages,
                  SPLITS=splits, CHUNK=chunk, ATT_M=att_m, ATT_N=ATT_BLOCK_N,
                  ATT_S=triton.next_power_of_2(splits),
                  O_N=o_n, O_K=o_k, O_STAGES=o_stages, GU_N=gu_n, GU_K=gu_k, GU_STAGES=gu_stages,
                  DN_N=dn_n, DN_K=dn_k, DN_STAGES=dn_stages, IEEE=dt == torch.float32, PDL=chained,
                  num_warps=warps, num_stages=attention_stages, launch_pdl=chained)
    if grid is None:
        key = (hidden, inter, head_dim, num_heads, num_kv_heads, splits, chunk, dt, chained, attention_stages, dev)
        grid = _grid(key, dev, lambda: _decode_layer.warmup(*args, grid=(1,), GRID=1, **consts))
    grid = max(1, min(grid, tiles_e))
    _decode_layer[(grid,)](*args, GRID=grid, **consts)
    return y
