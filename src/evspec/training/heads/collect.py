"""``evspec collect``: training data for adapters, LoRA distillation and draft heads.

For each (clip, question):

1. the target's greedy answer ``x_0..x_{m-1}`` (the engine's target-only loop: prefill,
   argmax, one token per pass; EOS included when produced);
2. the target **teacher-forced on that answer** in one pass from the prompt: its last
   hidden states ``h_j`` and top-K log-probabilities at every position ``j`` (the state
   that predicts ``x_j``);
3. EventGPT **teacher-forced on the same answer** (ids outside the shared vocabulary as
   ``<unk>``): its hidden states ``g_j`` at the same positions, its own greedy guess, its
   prompt ids, its event embedding (and, optionally, its prompt's hidden states).

So position ``j`` of both models conditions on the same tokens ``x_0..x_{j-1}`` (the
research paired positions of two *different* texts).  Output: chunked safetensors
(``adapters.store``); resumable (finished chunks are skipped); shards by ``--num-chunks N --chunk-idx I`` or torchrun
splits the work across processes or GPUs into the same folder.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from tqdm.auto import tqdm
from evspec.progress import bar_disable

from evspec.modules.checkpoint import fingerprint
from evspec.data.runlock import holds_run_lock
from evspec.loading import ClipSizes
from evspec.modules.memory import eventgpt_pass
from evspec.training.heads.requests import manifest_requests
from evspec.training.heads.store import ChunkWriter, Example, write_frozen
from evspec.models.request import Request

_STORE_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass(frozen=True)
class CollectConfig:
    """Settings of one collect run.

    ``split``: manifest split to collect (``train``, ``val``, ``test``); ``limit``: first N
    questions of it; ``max_new_tokens``: answer cap; ``topk``: target log-probs kept per
    position; ``prefill_memory``: also keep EventGPT's prompt states (event-head with
    ``memory_source="prefill"``); ``video_features``: keep the target's video features per
    clip (the aligner); ``store_dtype``: of hidden states on disk; ``canvas``: event image
    canvas (``auto`` = the manifest's: ``sensor`` for the world, else ``chunk``; ``sensor`` =
    the recording's, as the world models were trained; ``chunk`` = the EventGPT release's,
    each image sized from its own events, for real checkpoints; ``data`` = one canvas sized
    from the whole window);
    ``time_budget_s``: stop cleanly (everything written is kept) after this long.
    """

    split: str = "train"
    limit: int | None = None
    max_new_tokens: int = 48
    topk: int = 20
    chunk_size: int = 256
    prefill_memory: bool = False
    video_features: bool = True
    store_dtype: str = "bfloat16"
    canvas: Literal["auto", "chunk", "data", "sensor"] = "auto"
    shard: int = 0
    num_shards: int = 1
    time_budget_s: float | None = None

    def __post_init__(self) -> None:
        if self.split not in ("train", "val", "test"):
            raise ValueError(f"CollectConfig.split {self.split!r}: use train, val or test")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"CollectConfig.limit must be >= 1 (or None for all), got {self.limit}")
        if self.max_new_tokens < 2:
            raise ValueError(f"CollectConfig.max_new_tokens must be >= 2, got {self.max_new_tokens}")
        if not 1 <= self.topk <= 1024:
            raise ValueError(f"CollectConfig.topk must be in [1, 1024], got {self.topk}")
        if self.chunk_size < 1:
            raise ValueError(f"CollectConfig.chunk_size must be >= 1, got {self.chunk_size}")
        if self.store_dtype not in _STORE_DTYPES:
            raise ValueError(f"CollectConfig.store_dtype {self.store_dtype!r}: use {', '.join(_STORE_DTYPES)}")
        if self.canvas not in ("auto", "chunk", "data", "sensor"):
            raise ValueError(
                f"CollectConfig.canvas {self.canvas!r}: use auto, chunk, data or sensor"
            )
        if not 0 <= self.shard < self.num_shards:
            raise ValueError(f"CollectConfig.shard {self.shard} must be in [0, num_shards = {self.num_shards})")
        if self.time_budget_s is not None and self.time_budget_s <= 0:
            raise ValueError(f"CollectConfig.time_budget_s must be > 0, got {self.time_budget_s}")


@dataclass
class CollectReport:
    out: Path
    written: int  # examples written by this call
    skipped: int  # already in the folder (resume)
    total: int  # examples of this shard now in the folder
    teacher_mismatch: int  # positions where teacher-forced argmax != greedy token (bf16 noise)
    seconds: float
    stopped_early: bool


def shared_vocab(target: Any, draft: Any) -> int:
    """Ids both models understand alike (as the model drafters compute it)."""
    from evspec.models.tokenizer import shared_vocab_size

    t_tok, d_tok = getattr(target, "tokenizer", None), getattr(draft, "tokenizer", None)
    n = min(int(draft.vocab_size), int(target.vocab_size))
    if t_tok is None or d_tok is None or t_tok is d_tok:
        return n
    return min(n, shared_vocab_size(d_tok, t_tok))


@torch.inference_mode()
def greedy_answer(target: Any, request: Request, max_new_tokens: int) -> tuple[list[int], Any]:
    """The target-only greedy answer (as the engine produces it) and the prefilled state."""
    state = target.prefill(request, return_hidden=True)
    tokens = [int(torch.argmax(state.last_logits))]
    while len(tokens) < max_new_tokens and tokens[-1] != target.eos_token_id:
        if state.length + 1 > target.max_context:
            break
        out = target.score(state, torch.tensor([tokens[-1]], dtype=torch.long))
        tokens.append(int(torch.argmax(out.logits[-1])))
    return tokens, state


@torch.inference_mode()
def collect_one(
    target: Any,
    draft: Any,
    request: Request,
    key: str,
    split: str,
    config: CollectConfig,
    *,
    shared: int,
    video_features: torch.Tensor | None = None,
) -> tuple[Example, int]:
    """Collect one example; returns it and the number of teacher/greedy mismatches."""
    dtype = _STORE_DTYPES[config.store_dtype]
    answer, state = greedy_answer(target, request, config.max_new_tokens)
    m = len(answer)
    prompt_len = int(state.prompt_ids.numel())
    h0, logits0 = state.last_hidden, state.last_logits  # [H_t], [V_t]
    # teacher-force the target on the answer: back to the prompt, one pass over x_0..x_{m-2}
    target.rollback(state, state.length - prompt_len)
    hidden, logits = h0[None], logits0[None]  # [1, H_t], [1, V_t]
    if m > 1:
        out = target.score(state, torch.tensor(answer[:-1], dtype=torch.long), return_hidden=True)
        hidden = torch.cat([hidden, out.hidden], dim=0)  # [m, H_t]
        logits = torch.cat([logits, out.logits], dim=0)  # [m, V_t]
    release = getattr(target, "release", None)
    if release is not None:
        release(state)
    logp = torch.log_softmax(logits.float(), dim=-1)  # [m, V_t]
    top_logp, top_ids = logp.topk(min(config.topk, logp.shape[-1]), dim=-1)  # [m, K]
    mismatch = int((top_ids[:, 0].cpu() != torch.tensor(answer)).sum())

    # EventGPT on the same answer: states at the prompt's last position and x_0..x_{m-2}
    ev = eventgpt_pass(draft, request, answer[:-1], shared_vocab=shared)
    assert ev.hidden is not None
    g = ev.hidden[ev.prompt_len - 1 : ev.prompt_len - 1 + m]  # [m, H_d]
    d_logits = draft.lm_head(g).float()[:, :shared]  # [m, V_s]
    example = Example(
        key=key, clip_id=request.clip_id or key, question=request.question, qtype=request.qtype, split=split,
        answer_ids=torch.tensor(answer, dtype=torch.long),
        target_hidden=hidden.to("cpu", dtype),
        topk_ids=top_ids.cpu().long(),
        topk_logp=top_logp.cpu().float(),
        draft_answer_ids=torch.tensor([t if t < shared else 0 for t in answer], dtype=torch.long),
        draft_hidden=g.to("cpu", dtype),
        draft_top1=d_logits.argmax(dim=-1).cpu(),
        draft_prompt_ids=ev.prompt_ids.cpu(),
        event_embeds=ev.event_embeds.to("cpu", dtype),
        video_features=None if video_features is None else video_features.to("cpu", dtype),
        prefill_hidden=ev.hidden[: ev.prompt_len].to("cpu", dtype) if config.prefill_memory else None,
    )
    return example, mismatch


@torch.inference_mode()
def target_video_features(target: Any, request: Request) -> torch.Tensor:
    """The target's projected video features ``[T * P, H_t]`` of the request's clip."""
    return target.video_features(target.preprocess_video(request.video))


def collect_lock_name(config: CollectConfig) -> str:
    """The lock file of one collect shard: shards of a split share the folder, not a part."""
    return f".lock-{config.split}-{config.shard:05d}-of-{config.num_shards:05d}"


@holds_run_lock("collect", lambda a: (Path(a["out"]), collect_lock_name(a["config"])))
def collect(
    config: CollectConfig,
    target: Any,
    draft: Any,
    dataset: str | Path,
    out: str | Path,
    *,
    models: dict[str, str] | None = None,
    progress: bool = True,
) -> CollectReport:
    """Collect ``config.split`` of the manifest ``dataset`` into the folder ``out``.

    ``target`` is a Video-LLaVA wrapper, ``draft`` an EventGPT (both already loaded);
    ``models`` (e.g. ``{"target": spec, "draft": spec}``) is recorded in the index.
    """
    out = Path(out)
    start = time.perf_counter()
    sizes = ClipSizes.of(target, draft)
    items = manifest_requests(
        dataset, (config.split,), num_frames=sizes.num_frames,
        n_event_images=sizes.n_event_images, canvas=config.canvas, limit=config.limit,
    )
    shared = shared_vocab(target, draft)
    dims = {
        "target_hidden": int(target.lm_head.weight.shape[1]),
        "draft_hidden": int(draft.lm_head.weight.shape[1]),
        "target_vocab": int(target.vocab_size),
        "shared_vocab": shared,
        "eos": int(target.eos_token_id),
        "topk": config.topk,
        "target_fingerprint": [round(x, 4) for x in fingerprint(target.lm_head.weight)],
    }
    header = {
        "dims": dims, "max_new_tokens": config.max_new_tokens, "store_dtype": config.store_dtype,
        "prefill_memory": config.prefill_memory, "video_features": config.video_features,
        "canvas": config.canvas, "dataset": str(Path(dataset).resolve()), "models": models or {},
    }
    # this shard's questions (partitioned by clip) and its plan, for `evspec merge`
    from evspec.bench.shard import Shard
    from evspec.bench.shard_plan import plan_collect_shard

    items = plan_collect_shard(out, config.split, items, Shard(config.shard, config.num_shards), header)
    writer = ChunkWriter(out, config.split, config.shard, header, config.chunk_size)
    write_frozen(out, {
        "lm_head.weight": target.lm_head.weight.float(),
        "embed_tokens.weight": target.decoder.embed_tokens.weight.float(),
    })
    done = writer.done_keys
    todo = [it for it in items if it.key not in done]
    mismatches, written, stopped = 0, 0, False
    video_cache: tuple[str, torch.Tensor] | None = None
    bar = tqdm(todo, desc=f"collect {config.split} [{config.shard}/{config.num_shards}]", unit="q",
               disable=bar_disable(progress))
    try:
        for item in bar:
            if config.time_budget_s is not None and time.perf_counter() - start > config.time_budget_s:
                stopped = True
                break
            request = item.load()
            vf = None
            if config.video_features:
                if video_cache is None or video_cache[0] != item.clip_id:
                    video_cache = (item.clip_id, target_video_features(target, request))
                vf = video_cache[1]
            example, bad = collect_one(target, draft, request, item.key, item.split, config,
                                       shared=shared, video_features=vf)
            writer.add(example)
            mismatches += bad
            written += 1
            bar.set_postfix(tokens=example.length)
    finally:
        writer.flush()
        bar.close()
    return CollectReport(
        out=out, written=written, skipped=len(items) - len(todo), total=writer.written,
        teacher_mismatch=mismatches, seconds=time.perf_counter() - start, stopped_early=stopped,
    )

