"""Batched speculative decoding: several requests verified by one target pass per round,
each with its own drafter, acceptance and length ("batch processing").

Layout, and why.  Rows of one KV tensor ``[B, heads, S, head_dim]`` must share S, but
requests accept different numbers of drafts, so a row cannot be cropped on its own.
Instead every slot carries a validity bit (``valid [B, S]``) and attention is driven by
an explicit 4D additive mask and per-row ``position_ids``:

* prefill runs per request through the target's own ``prefill`` (so its prompt building,
  vision tower and prefix cache are reused unchanged); the caches are then merged,
  left-padded, into one ``DynamicCache`` (pad slots invalid);
* a round feeds ``[pending, d_1..d_k]`` per row, padded to the longest row; row b's query
  i sees its valid slots and its own new slots ``<= i``; positions continue each row's
  own count, so a slot's physical column never matters (keys are rotated by position);
* after verification the slots of rejected drafts and padding are marked invalid, the
  columns invalid in every row are cropped off the end, finished rows leave the batch,
  and when more than half of the slots are invalid the rows are compacted (gather the
  valid slots, left-pad again).

Lossless per request: each row's logits are those of its own sequence (masked slots add
exactly zero weight), and each row uses the engine's acceptance rule with its own random
generator seeded like ``engine.generate(seed=...)``; in float32, outputs equal the
unbatched ones.  Drafters run one request after another (their own models); the target's
verification, the expensive part at 7B, is what is batched.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from transformers import DynamicCache

from evspec.decoding.protocols import Draft, Drafter, Target
from evspec.decoding.sampling import select, token_limit, validate_sampling, verify
from evspec.decoding.stats import RequestStats, Result, RoundStats
from evspec.models.causal_lm import sync, timed
from evspec.models.request import Request

#: builds request i's drafter (None = target-only for that row)
DrafterFactory = Callable[[int, Request], Drafter | None]


@dataclass
class _Row:
    """One request's decoding state inside the batch."""

    index: int
    drafter: Drafter | None
    gen: torch.Generator | None
    stats: RequestStats
    tokens: list[int]
    pending: int
    pos: int  # position id of the pending token
    needs_hidden: bool = False
    reference: list[int] | None = None
    stop: str = ""
    draft: Draft | None = None
    k: int = 0
    draft_ms: float = 0.0
    budget: int = 0


class _BatchKV:
    """A ``DynamicCache`` over B rows with a validity mask ``valid [B, S]``."""

    def __init__(self, caches: list, lengths: list[int], device: torch.device) -> None:
        s = max(lengths)
        self.cache = DynamicCache()
        n_layers = len(caches[0].layers)
        for i in range(n_layers):
            ks, vs = [], []
            for c, n in zip(caches, lengths):
                k, v = c.layers[i].keys, c.layers[i].values  # [1, Hkv, n, D]
                pad = (0, 0, s - n, 0)  # left-pad the sequence dimension
                ks.append(torch.nn.functional.pad(k, pad))
                vs.append(torch.nn.functional.pad(v, pad))
            self.cache.update(torch.cat(ks), torch.cat(vs), i)  # [B, Hkv, S, D]
        self.valid = torch.zeros(len(lengths), s, dtype=torch.bool, device=device)  # [B, S]
        for b, n in enumerate(lengths):
            self.valid[b, s - n :] = True

    @property
    def width(self) -> int:
        return int(self.valid.shape[1])

    def mask(self, lengths: list[int], t: int, dtype: torch.dtype) -> torch.Tensor:
        """Additive ``[B, 1, T, S + T]`` for feeding ``lengths[b] <= T`` new tokens per row."""
        b = len(lengths)
        device = self.valid.device
        n = torch.tensor(lengths, device=device)  # [B]
        i = torch.arange(t, device=device)
        causal = i[None, :] <= i[:, None]  # [T, T]
        real = i[None, :] < n[:, None]  # [B, T] real (not padding) new columns
        new = causal[None] & real[:, None, :]  # [B, T, T]
        new = new | torch.eye(t, dtype=torch.bool, device=device)[None]  # padding rows see themselves
        visible = torch.cat([self.valid[:, None, :].expand(b, t, -1), new], dim=2)  # [B, T, S + T]
        mask = torch.zeros(visible.shape, dtype=dtype, device=device)
        mask.masked_fill_(~visible, torch.finfo(dtype).min)
        return mask[:, None]

    def extend(self, keep: list[int], t: int) -> None:
        """After a pass of T columns: row b keeps its first ``keep[b]`` new slots valid."""
        i = torch.arange(t, device=self.valid.device)
        new = i[None, :] < torch.tensor(keep, device=self.valid.device)[:, None]  # [B, T]
        self.valid = torch.cat([self.valid, new], dim=1)

    def select_rows(self, rows: list[int]) -> None:
        idx = torch.tensor(rows, dtype=torch.long, device=self.valid.device)
        self.cache.batch_select_indices(idx)
        self.valid = self.valid[idx]

    def tidy(self) -> None:
        """Crop columns invalid in every row off the end; compact when over half is waste."""
        used = self.valid.any(dim=0).nonzero()
        last = int(used.max()) + 1 if used.numel() else 0
        if last < self.width:
            self.cache.crop(-(self.width - last))
            self.valid = self.valid[:, :last]
        if self.valid.numel() and float(self.valid.float().mean()) < 0.5:
            self._compact()

    def _compact(self) -> None:
        counts = self.valid.sum(dim=1).tolist()
        s = max(counts)
        # per row: valid slot indices, left-padded with slot 0 (then marked invalid)
        idx = torch.zeros(len(counts), s, dtype=torch.long, device=self.valid.device)
        for b, n in enumerate(counts):
            idx[b, s - n :] = self.valid[b].nonzero().flatten()
        for layer in self.cache.layers:
            gather = idx[:, None, :, None].expand(-1, layer.keys.shape[1], -1, layer.keys.shape[3])
            layer.keys = torch.gather(layer.keys, 2, gather)  # [B, Hkv, s, D]
            layer.values = torch.gather(layer.values, 2, gather)
        valid = torch.zeros(len(counts), s, dtype=torch.bool, device=self.valid.device)
        for b, n in enumerate(counts):
            valid[b, s - n :] = True
        self.valid = valid


def generate_batch(
    target: Target,
    requests: Sequence[Request],
    drafter_factory: DrafterFactory | None,
    *,
    gamma: int = 4,
    max_new_tokens: int = 128,
    temperature: float = 0.0,
    top_p: float = 1.0,
    seeds: Sequence[int] | int = 0,
    stop_at_eos: bool = True,
    forced_references: Sequence[list[int]] | None = None,
) -> list[Result]:
    """Answer ``requests`` together; ``results[i]`` equals ``engine.generate(target,
    requests[i], drafter_factory(i, requests[i]), seed=seeds[i], ...)`` (float32).

    ``seeds``: one per request, or one int for all.  ``forced_references``:
    acceptance-controlled timing (greedy), one reference per request, as in
    ``engine.generate``.  Per-request stats: ``score_ms`` is the shared batched pass;
    ``total_ms`` runs from the batch start to that request's last token.
    """
    if not requests:
        return []
    if gamma < 1:
        raise ValueError(f"gamma must be >= 1, got {gamma}")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    validate_sampling(temperature, top_p)
    n_req = len(requests)
    seed_list = [int(seeds)] * n_req if isinstance(seeds, int) else [int(s) for s in seeds]
    if len(seed_list) != n_req:
        raise ValueError(f"generate_batch: {len(seed_list)} seeds for {n_req} requests")
    if forced_references is not None:
        if temperature != 0:
            raise ValueError("forced_references (acceptance-controlled) need greedy decoding")
        if len(forced_references) != n_req or any(not r for r in forced_references):
            raise ValueError("generate_batch: give one non-empty forced reference per request")
    device = target.device
    eos = target.eos_token_id if stop_at_eos else -1
    sync(device)
    t_start = time.perf_counter()

    # -- phase 1: prefill each request, first tokens, drafters ------------------------------
    rows: list[_Row] = []
    caches, lengths = [], []
    for i, req in enumerate(requests):
        drafter = drafter_factory(i, req) if drafter_factory is not None else None
        needs_hidden = bool(getattr(drafter, "needs_target_hidden", False))
        state = target.prefill(req, return_hidden=needs_hidden)
        if not isinstance(state.cache, DynamicCache):
            raise RuntimeError("generate_batch runs on the dynamic-cache path; disable_fast() on the target")
        gen = torch.Generator(device=device).manual_seed(seed_list[i]) if temperature > 0 else None
        first = select(state.last_logits, temperature, top_p, gen, token_limit(target))
        ref = None if forced_references is None else list(forced_references[i])
        if ref is not None:
            first = ref[0]
        stats = RequestStats(drafter=drafter.name if drafter else "none", gamma=gamma if drafter else 0)
        stats.target_prefill_ms = state.timings.get("prefill_ms", 0.0)
        stats.target_vision_ms = state.timings.get("vision_ms", 0.0)
        sync(device)
        stats.ttft_ms = (time.perf_counter() - t_start) * 1e3
        row = _Row(i, drafter, gen, stats, [first], first, state.length, needs_hidden, ref)
        row.budget = min(max_new_tokens, len(ref)) if ref is not None else max_new_tokens
        row.stop = "eos" if first == eos else ("max_new_tokens" if row.budget == 1 else "")
        if drafter is not None and not row.stop:
            drafter.begin(req, target, state, first)
        caches.append(state.cache)
        lengths.append(state.length)
        rows.append(row)
    kv = _BatchKV(caches, lengths, device)
    del caches
    active = [r for r in rows if not r.stop]
    if active and len(active) < len(rows):
        kv.select_rows([r.index for r in active])
    for r in rows:
        if r.stop:
            _finish(r, t_start, device)

    try:
        while active:
            # -- phase 2: propose, row by row -------------------------------------------------
            for r in active:
                room = target.max_context - r.pos
                r.k = min(gamma, r.budget - len(r.tokens) - 1, room - 1) if r.drafter is not None else 0
                r.draft, rnd = Draft(tokens=torch.zeros(0, dtype=torch.long)), {}
                if r.k > 0:
                    with timed(device, rnd, "draft_ms"):
                        r.draft = r.drafter.propose(r.k, temperature, r.gen)
                r.draft_ms = rnd.get("draft_ms", 0.0)
            feeds = [torch.cat([torch.tensor([r.pending]), r.draft.tokens.reshape(-1).long().cpu()]) for r in active]
            t = max(int(f.numel()) for f in feeds)
            ids = torch.zeros(len(active), t, dtype=torch.long)  # [B, T], padded with id 0
            for b, f in enumerate(feeds):
                ids[b, : f.numel()] = f
            pos = torch.tensor([r.pos for r in active])[:, None] + torch.arange(t)[None]  # [B, T]
            rnd = {}
            # -- phase 3: one batched target pass ---------------------------------------------
            with timed(device, rnd, "score_ms"), torch.inference_mode():
                mask = kv.mask([int(f.numel()) for f in feeds], t, target.dtype)  # [B, 1, T, S + T]
                out = target.decoder(
                    input_ids=ids.to(device), attention_mask=mask, position_ids=pos.to(device),
                    past_key_values=kv.cache, use_cache=True,
                )
                hidden = out.last_hidden_state  # [B, T, H]
                logits = target.lm_head(hidden).float()  # [B, T, V]
            # -- phase 4: verify and accept per row --------------------------------------------
            keep = []
            for b, r in enumerate(active):
                d = feeds[b][1:]  # [k']
                k = int(d.numel())
                verdict = verify(logits[b, : k + 1], d, r.draft.probs, temperature=temperature,
                                 top_p=top_p, generator=r.gen, n_ids=token_limit(target))
                n, nxt = verdict.n_accepted, verdict.next_token
                if r.reference is not None:
                    at = len(r.tokens)
                    n = 0
                    while n < k and int(d[n]) == r.reference[at + n]:
                        n += 1
                    nxt = r.reference[at + n]
                keep.append(n + 1)  # pending + d_1..d_n become valid slots
                new = d[:n].tolist() + [nxt]
                if eos in new:
                    new = new[: new.index(eos) + 1]
                    r.stop = "eos"
                if r.drafter is not None and not r.stop:
                    if r.needs_hidden:
                        r.drafter.accept(n, nxt, target_hidden=hidden[b, : n + 1])
                    else:
                        r.drafter.accept(n, nxt)
                r.tokens.extend(new)
                r.pending, r.pos = nxt, r.pos + n + 1
                if r.drafter is not None:
                    r.stats.rounds.append(RoundStats(k, n, r.draft_ms, rnd["score_ms"]))
                else:
                    r.stats.rounds.append(RoundStats(0, 0, 0.0, rnd["score_ms"]))
                if not r.stop and len(r.tokens) >= r.budget:
                    r.stop = "max_new_tokens"
                if not r.stop and target.max_context - r.pos < 1:
                    r.stop = "context"
            kv.extend(keep, t)
            # -- phase 5: retire finished rows, tidy the cache ----------------------------------
            alive = [b for b, r in enumerate(active) if not r.stop]
            for r in active:
                if r.stop:
                    _finish(r, t_start, device)
            if len(alive) < len(active):
                active = [active[b] for b in alive]
                if active:
                    kv.select_rows(alive)
            if active:
                kv.tidy()
    finally:
        for r in rows:
            if r.drafter is not None:
                r.drafter.end()
    return [Result(tokens=r.tokens, text=target.decode_text(r.tokens), stats=r.stats) for r in rows]


def _finish(row: _Row, t_start: float, device: torch.device) -> None:
    sync(device)
    row.stats.total_ms = (time.perf_counter() - t_start) * 1e3
    row.stats.new_tokens = len(row.tokens)
    row.stats.stop_reason = row.stop
