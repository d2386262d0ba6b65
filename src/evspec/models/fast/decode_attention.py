"""Split-KV ("flash-decoding") attention for decode and score steps of a few queries.

At batch 1 a decode step has one query per head, so a fused attention kernel that gives each
(head, query block) one thread block runs 32 blocks on the H200's 132 multiprocessors, and
reads the KV cache at about half the bandwidth a copy reaches; with a 9-token score step and
an additive mask SDPA fell to 0.7 TB/s (benchmarks/results/engine/attention_probe.json).
Here the cache rows are cut into ``splits`` chunks and every (KV head, chunk) is one block:

    stage 1, grid (H_kv, splits): the block's queries (all ``groups × T`` query rows that share
        the KV head) against its chunk, online softmax -> a normalised partial output and its
        log-sum-exp per query row;
    stage 2, grid (H_kv, groups × T): the partials merged with weights exp(lse_s − max lse).

Visibility is the engine's: query ``i`` (at position ``pos + i``) sees key ``j`` iff
``j <= pos + i`` and ``j < kv_rows``.  ``pos`` is read on the device (one graph serves every
position); loads past the last visible key are masked off, so the rows between the current
length and the kv bucket are not read.  On CUDA with Triton the two stages are Triton
kernels; elsewhere :func:`split_kv_reference` runs the same partition and merge in torch (what
the CPU tests check against plain attention).
"""

from __future__ import annotations

import math

import torch

from evspec.models.fast.triton_support import available, pdl, pdl_release, pdl_wait, tl, triton

#: keys per inner iteration where :data:`STEP_CONFIGS` does not say (four-byte activations,
#: :func:`choose_splits`' default); the query block is padded to at least 16 rows for ``tl.dot``
BLOCK_N = 64
#: thread blocks stage 1 aims for (KV heads × splits) by default in :func:`choose_splits`
BLOCKS_WANTED = 264
#: the most query rows (groups × T) one block holds
MAX_ROWS = 64
#: stage 1's launch configuration (blocks wanted, keys per iteration, warps, stages) for one
#: query row per KV head (an MHA decode step) and for more: the fastest of
#: ``attention_probe.py --splitkv-sweep`` on the H200 at 7B shapes (one row 0.484 ms against
#: 0.532 for (264, 64, 4, 3); nine rows 0.502 against 0.576;
#: benchmarks/fast_engine.md).  Four-byte activations keep 64 keys (shared memory).
STEP_CONFIGS = {"one": (264, 128, 8, 2), "several": (1056, 128, 4, 2)}
#: row-invariant attention (:func:`exact_config`): cache rows per split, from position 0 (the
#: partition of a query's keys depends on its position only), and the most queries a step has
EXACT_CHUNK = 128
EXACT_QUERIES = 16


def launch_config(rows: int, itemsize: int) -> tuple[int, int, int, int]:
    """``(blocks_wanted, block_n, num_warps, num_stages)`` for ``rows`` query rows per KV head
    of ``itemsize``-byte activations."""
    blocks, block_n, warps, stages = STEP_CONFIGS["one" if rows == 1 else "several"]
    return blocks, block_n if itemsize <= 2 else BLOCK_N, warps, stages


def fits(num_heads: int, num_kv_heads: int, queries: int, head_dim: int) -> bool:
    """Whether the kernels take a step of ``queries`` tokens: one block per KV head holds its
    query rows, and ``head_dim`` is a power of two >= 16 (``tl.dot``); else SDPA serves it."""
    return num_heads // num_kv_heads * queries <= MAX_ROWS and head_dim >= 16 and not head_dim & (head_dim - 1)


def choose_splits(kv_rows: int, kv_heads: int, blocks_wanted: int = BLOCKS_WANTED, block: int = BLOCK_N,
                  want: int | None = None) -> tuple[int, int]:
    """``(splits, chunk)``: about ``want`` chunks (default: enough that ``kv_heads × splits``
    blocks fill the GPU, ``blocks_wanted``, two per multiprocessor on an H200), each a
    multiple of ``block`` rows."""
    if kv_rows < 1 or kv_heads < 1:
        raise ValueError(f"kv_rows and kv_heads must be >= 1, got {kv_rows}, {kv_heads}")
    if want is None:
        want = max(1, min(math.ceil(kv_rows / block), math.ceil(blocks_wanted / kv_heads)))
    chunk = math.ceil(math.ceil(kv_rows / want) / block) * block
    return math.ceil(kv_rows / chunk), chunk


def split_kv_reference(
    q: torch.Tensor,  # [Hq, T, D]
    keys: torch.Tensor,  # [Hkv, >= kv_rows, D]
    values: torch.Tensor,
    pos: torch.Tensor,  # 0-d or [>= 1] int64: position of the first query
    kv_rows: int,
    scale: float,
    splits: int,
    chunk: int,
) -> torch.Tensor:
    """The split-KV algorithm in torch (float32 statistics): each chunk's normalised output
    and log-sum-exp, then the merge.  Equals softmax attention over the visible keys."""
    hq, t, d = q.shape
    hkv = keys.shape[0]
    groups = hq // hkv
    rows = splits * chunk
    k = torch.zeros(hkv, rows, d, dtype=keys.dtype, device=keys.device)
    v = torch.zeros_like(k)
    k[:, :kv_rows], v[:, :kv_rows] = keys[:, :kv_rows], values[:, :kv_rows]
    qf = q.float().reshape(hkv, groups * t, d)  # rows g*T + i share KV head h
    scores = torch.einsum("hmd,hnd->hmn", qf, k.float()) * scale  # [Hkv, M, rows]
    start = pos.reshape(-1)[0]
    q_pos = start + torch.arange(t, device=q.device).repeat(groups)  # [M]
    key = torch.arange(rows, device=q.device)
    visible = (key[None, :] <= q_pos[:, None]) & (key[None, :] < kv_rows)  # [M, rows]
    scores = scores.masked_fill(~visible, float("-inf")).view(hkv, groups * t, splits, chunk)
    m = scores.amax(-1)  # [Hkv, M, S]
    m_safe = torch.where(torch.isinf(m), torch.zeros_like(m), m)
    p = torch.exp(scores - m_safe[..., None])
    l = p.sum(-1)  # [Hkv, M, S]
    part = torch.einsum("hmsn,hsnd->hmsd", p, v.float().view(hkv, splits, chunk, d))
    part = part / torch.where(l > 0, l, torch.ones_like(l))[..., None]
    lse = torch.where(l > 0, m_safe + torch.log(l), torch.full_like(l, float("-inf")))
    w = torch.softmax(lse, dim=-1)  # empty chunks weigh 0
    out = (part * w[..., None]).sum(2)  # [Hkv, M, D]
    return out.view(hq, t, d).to(q.dtype)


if triton is not None:

    @triton.jit
    def _stage1(Q, K, V, POS, O_PART, LSE, kv_rows, scale,
                stride_qh, stride_qt, stride_kh, stride_kn, stride_vh, stride_vn,
                T: tl.constexpr, GROUPS: tl.constexpr, SPLITS: tl.constexpr, D: tl.constexpr,
                CHUNK: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, IEEE: tl.constexpr,
                PDL: tl.constexpr):
        pdl_release(PDL)
        pdl_wait(PDL)  # q and the step's cache rows come from the previous kernel
        h = tl.program_id(0)
        s = tl.program_id(1)
        r = tl.arange(0, BLOCK_M)
        row_ok = r < GROUPS * T
        g = r // T
        i = r % T
        d = tl.arange(0, D)
        q = tl.load(Q + (h * GROUPS + g)[:, None] * stride_qh + i[:, None] * stride_qt + d[None, :],
                    mask=row_ok[:, None], other=0.0)
        pos = tl.load(POS)
        lo = s * CHUNK
        hi = tl.minimum(tl.minimum(lo + CHUNK, kv_rows), pos + T)  # last visible key + 1
        m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
        l_i = tl.zeros([BLOCK_M], tl.float32)
        acc = tl.zeros([BLOCK_M, D], tl.float32)
        for b in range(CHUNK // BLOCK_N):  # a static trip count (pipelined); masked loads past hi read nothing
            n = lo + b * BLOCK_N + tl.arange(0, BLOCK_N)
            k_ok = n < hi
            k = tl.load(K + h * stride_kh + n[None, :] * stride_kn + d[:, None], mask=k_ok[None, :], other=0.0)
            if IEEE:
                qk = tl.dot(q, k, input_precision="ieee") * scale
            else:
                qk = tl.dot(q, k) * scale
            vis = (n[None, :] <= pos + i[:, None]) & k_ok[None, :] & row_ok[:, None]
            qk = tl.where(vis, qk, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(qk, 1))
            m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
            alpha = tl.exp(m_i - m_safe)
            p = tl.exp(qk - m_safe[:, None])
            l_i = l_i * alpha + tl.sum(p, 1)
            v = tl.load(V + h * stride_vh + n[:, None] * stride_vn + d[None, :], mask=k_ok[:, None], other=0.0)
            if IEEE:
                acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision="ieee")
            else:
                acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
            m_i = m_new
        has = l_i > 0
        lse = tl.where(has, m_i + tl.log(tl.where(has, l_i, 1.0)), float("-inf"))
        o = acc / tl.where(has, l_i, 1.0)[:, None]
        base = (h * SPLITS + s) * BLOCK_M + r
        tl.store(O_PART + base[:, None] * D + d[None, :], o, mask=row_ok[:, None])
        tl.store(LSE + base, lse, mask=row_ok)

    @triton.jit
    def _stage2(O_PART, LSE, OUT, stride_oh, stride_ot,
                T: tl.constexpr, GROUPS: tl.constexpr, SPLITS: tl.constexpr, D: tl.constexpr,
                BLOCK_M: tl.constexpr, PDL: tl.constexpr):
        # the partials merged one split after the other (a fixed order; splits past a query's
        # last visible key weigh exactly 0 and change nothing)
        pdl_release(PDL)
        pdl_wait(PDL)
        h = tl.program_id(0)
        r = tl.program_id(1)
        top = tl.load(LSE + h * SPLITS * BLOCK_M + r)
        for s in range(1, SPLITS):
            top = tl.maximum(top, tl.load(LSE + (h * SPLITS + s) * BLOCK_M + r))
        d = tl.arange(0, D)
        total = tl.zeros([1], tl.float32)
        out = tl.zeros([D], tl.float32)
        for s in range(SPLITS):
            base = (h * SPLITS + s) * BLOCK_M + r
            w = tl.exp(tl.load(LSE + base + tl.zeros([1], tl.int32)) - top)
            total += w
            out += tl.load(O_PART + base * D + d) * w
        out = out / total
        g = r // T
        i = r % T
        tl.store(OUT + (h * GROUPS + g) * stride_oh + i * stride_ot + d, out.to(OUT.dtype.element_ty))


def exact_config(groups: int, itemsize: int) -> tuple[int, int, int, int, int]:
    """``(block_m, chunk, block_n, num_warps, num_stages)`` of row-invariant split-KV attention
    for a model with ``groups`` query heads per KV head: the same for every number of queries,
    so a query's partition (chunks of :data:`EXACT_CHUNK` rows from position 0), its tiles and
    its reduction order depend on its own position only."""
    block_m = max(16, 1 << (groups * EXACT_QUERIES - 1).bit_length())
    _, block_n, warps, stages = STEP_CONFIGS["one"]
    return block_m, EXACT_CHUNK, block_n if itemsize <= 2 else BLOCK_N, warps, stages


def exact_fits(num_heads: int, num_kv_heads: int, head_dim: int) -> bool:
    """Whether row-invariant split-KV attention takes the model (steps of up to
    :data:`EXACT_QUERIES` queries in one block per KV head)."""
    return fits(num_heads, num_kv_heads, EXACT_QUERIES, head_dim)


def split_kv_attention(
    q: torch.Tensor,  # [Hq, T, D]
    keys: torch.Tensor,  # [Hkv, >= kv_rows, D] (a cache view: rows contiguous)
    values: torch.Tensor,
    pos: torch.Tensor,  # 0-d or [>= 1] int64 on q's device: the first query's position
    kv_rows: int,
    scale: float,
    *,
    splits: int | None = None,
    backend: str = "auto",
    blocks_wanted: int | None = None,
    block_n: int | None = None,
    num_warps: int | None = None,
    num_stages: int | None = None,
    exact: bool = False,
) -> torch.Tensor:
    """Attention of ``T`` queries at ``pos .. pos + T - 1`` over cache rows ``[0, kv_rows)``
    -> ``[Hq, T, D]``.  ``backend``: ``triton``, ``torch`` (the reference) or ``auto``
    (Triton where :func:`~evspec.models.fast.triton_support.available`);
    ``blocks_wanted``/``block_n``: see :func:`choose_splits`; ``num_warps``/``num_stages``:
    stage 1's launch configuration (each default: :func:`launch_config`).  ``exact``:
    row-invariant (:func:`exact_config`; the launch options are then fixed): a query's output
    is bitwise the same whatever ``T`` and ``kv_rows``; the torch fallback is then
    :func:`chunked_attention`."""
    if backend not in ("auto", "triton", "torch"):
        raise ValueError(f"backend must be auto, triton or torch, got {backend!r}")
    hq, t, d = q.shape
    hkv = keys.shape[0]
    if hq % hkv:
        raise ValueError(f"{hq} query heads do not share {hkv} KV heads evenly")
    groups = hq // hkv
    use_triton = backend == "triton" or (backend == "auto" and available(q.device))
    if exact:
        if t > EXACT_QUERIES:
            raise ValueError(
                f"exact split-KV attention takes up to {EXACT_QUERIES} queries, got {t}")
        block_m, chunk, block_n, num_warps, num_stages = exact_config(groups, q.element_size())
        splits = -(-kv_rows // chunk)
        if not use_triton or not exact_fits(hq, hkv, d):
            start = pos.reshape(-1)[0]
            positions = start + torch.arange(t, device=q.device)
            return chunked_attention(q, keys, values, positions, kv_rows, scale)
    else:
        cfg = launch_config(groups * t, q.element_size())
        blocks_wanted, block_n = blocks_wanted or cfg[0], block_n or cfg[1]
        num_warps, num_stages = num_warps or cfg[2], num_stages or cfg[3]
        splits, chunk = choose_splits(kv_rows, hkv, blocks_wanted, block_n, want=splits)
        if not use_triton or not fits(hq, hkv, t, d):
            return split_kv_reference(q, keys, values, pos, kv_rows, scale, splits, chunk)
        block_m = max(16, triton.next_power_of_2(groups * t))
    if triton is None:
        raise RuntimeError("backend='triton' needs the triton package")
    if keys.stride(-1) != 1 or values.stride(-1) != 1 or q.stride(-1) != 1:
        raise ValueError("split_kv_attention needs the last dimension contiguous")
    o_part = torch.empty(hkv * splits * block_m, d, dtype=torch.float32, device=q.device)
    lse = torch.empty(hkv * splits * block_m, dtype=torch.float32, device=q.device)
    # [Hq, T, D] over [T, Hq, D] storage: the o projection's [T, Hq * D] input is then a view
    out = torch.empty(t, hq, d, dtype=q.dtype, device=q.device).transpose(0, 1)
    chained = pdl(q.device)
    _stage1[(hkv, splits)](
        q, keys, values, pos.reshape(-1), o_part, lse, kv_rows, scale,
        q.stride(0), q.stride(1), keys.stride(0), keys.stride(1), values.stride(0), values.stride(1),
        T=t, GROUPS=groups, SPLITS=splits, D=d, CHUNK=chunk, BLOCK_M=block_m, BLOCK_N=block_n,
        IEEE=q.dtype == torch.float32, PDL=chained, launch_pdl=chained, num_warps=num_warps, num_stages=num_stages,
    )
    _stage2[(hkv, groups * t)](
        o_part, lse, out, out.stride(0), out.stride(1),
        T=t, GROUPS=groups, SPLITS=splits, D=d, BLOCK_M=block_m, PDL=chained, launch_pdl=chained,
        enable_fp_fusion=False,
    )
    return out


def chunked_attention(
    q: torch.Tensor,  # [Hq, T, D]
    keys: torch.Tensor,  # [Hkv, >= kv_rows, D]
    values: torch.Tensor,
    positions: torch.Tensor,  # [T] int64: the queries' positions
    kv_rows: int,
    scale: float,
    chunk: int = EXACT_CHUNK,
) -> torch.Tensor:
    """Row-invariant attention in torch (the CPU's, and the fallback of exact split-KV): the
    cache rows in chunks of ``chunk`` from position 0, each chunk a fixed-shape float32
    product and an online-softmax merge in chunk order -> ``[Hq, T, D]``.  Query ``i`` sees key
    ``j`` iff ``j <= positions[i]``; chunks past a query's position change nothing (weight
    exactly 0, factor exactly 1), so its output does not depend on ``kv_rows``, on ``T`` as long
    as the caller keeps the query count fixed (a fixed row bucket), or on its row."""
    hq, t, d = q.shape
    hkv = keys.shape[0]
    groups = hq // hkv
    qf = q.float().reshape(hkv, groups * t, d)  # rows g*T + i share KV head h
    q_pos = positions.reshape(-1).repeat(groups)  # [M]
    m = torch.full((hkv, groups * t), float("-inf"), device=q.device)
    l = torch.zeros(hkv, groups * t, device=q.device)
    acc = torch.zeros(hkv, groups * t, d, device=q.device)
    for lo in range(0, kv_rows, chunk):
        k = keys[:, lo:lo + chunk].float()  # [Hkv, C, D]
        v = values[:, lo:lo + chunk].float()
        if k.shape[1] < chunk:  # the buffer's end: zero rows, never visible
            pad = torch.zeros(hkv, chunk - k.shape[1], d, device=q.device)
            k, v = torch.cat((k, pad), 1), torch.cat((v, pad), 1)
        s = torch.bmm(qf, k.transpose(1, 2)) * scale  # [Hkv, M, C]
        visible = (lo + torch.arange(chunk, device=q.device))[None, :] <= q_pos[:, None]  # [M, C]
        s = s.masked_fill(~visible, float("-inf"))
        m_new = torch.maximum(m, s.amax(-1))
        m_safe = torch.where(torch.isinf(m_new), torch.zeros_like(m_new), m_new)
        p = torch.exp(s - m_safe[..., None])
        alpha = torch.exp(m - m_safe)
        l = l * alpha + p.sum(-1)
        acc = acc * alpha[..., None] + torch.bmm(p, v)
        m = m_new
    out = acc / torch.where(l > 0, l, torch.ones_like(l))[..., None]
    return out.view(hq, t, d).to(q.dtype)
