"""``evaluate_world``: how good the world models are, and how often the target accepts the
``eventgpt`` drafter's tokens.

Two measurements on one split (held-out ``test`` by default):

1. **Accuracy** of the target and of the drafter on every question (of the first
   ``limit`` clips): greedy answers decoded in batches (:meth:`WorldForward.greedy`, fp32),
   scored by :func:`~evspec.training.world.scoring.score_answer` (exact match with the style's
   reference; field-level match with the structured truth; the event-visible part).
2. **Naive acceptance** with the speculative-decoding engine on up to
   ``acceptance_per_type`` questions of each type: target-only greedy, then the
   ``eventgpt`` drafter at each γ in ``gammas`` (α, τ, per-position acceptance, times, and
   whether the output equals target-only).  Requests run in a pool of ``workers`` CPU
   processes, one thread each (float32).  ``engine_time_budget_s`` stops the sweep early
   (the questions done so far are reported, and the report says so).
"""

from __future__ import annotations

import multiprocessing
import os
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm
from evspec.progress import bar_disable

from evspec.training.world.batching import collate
from evspec.training.world.dataset import load_split, split_entries, world_extra
from evspec.training.world.forward import WorldForward
from evspec.training.world.scoring import score_answer
from evspec.training.world.world_models import load_world_model


@dataclass
class EvalConfig:
    """``target`` / ``drafter``: checkpoint folders; ``data``: the world folder.

    ``limit``: use the first N clips of the split (0 = all).  ``acceptance_per_type``:
    questions per question type in the engine sweep (0 = none).  ``device``: where the
    batched accuracy decoding runs (``auto``: CUDA when present).  ``workers``: CPU
    processes of the engine sweep (0 = all cores).
    """

    target: Path
    drafter: Path
    data: Path
    split: str = "test"
    limit: int = 0
    gammas: tuple[int, ...] = (1, 2, 3, 4, 5, 6, 7, 8)
    acceptance_per_type: int = 12
    max_new_tokens: int = 48
    batch_size: int = 128
    device: str = "auto"
    workers: int = 0
    engine_time_budget_s: float | None = None

    def __post_init__(self) -> None:
        self.target, self.drafter, self.data = Path(self.target), Path(self.drafter), Path(self.data)
        self.gammas = tuple(int(g) for g in self.gammas)
        if self.workers <= 0:
            self.workers = max(1, os.cpu_count() or 1)
        if self.split not in ("train", "val", "test"):
            raise ValueError(f"EvalConfig.split = {self.split!r}: use train, val or test")
        if not self.gammas or min(self.gammas) < 1:
            raise ValueError(f"EvalConfig.gammas = {self.gammas}: give gamma values >= 1")
        for name in ("limit", "acceptance_per_type"):
            if getattr(self, name) < 0:
                raise ValueError(f"EvalConfig.{name} = {getattr(self, name)} must be >= 0")
        if self.engine_time_budget_s is not None and self.engine_time_budget_s <= 0:
            raise ValueError(
                f"EvalConfig.engine_time_budget_s = {self.engine_time_budget_s} must be > 0 (or None)"
            )
        if self.max_new_tokens < 1 or self.batch_size < 1:
            raise ValueError("EvalConfig.max_new_tokens and batch_size must be >= 1")


@dataclass
class QuestionResult:
    """One question: both models' answers and scores, and (when swept) the engine runs."""

    clip: str
    qtype: str
    question: str
    reference: str
    reference_drafter: str
    target_answer: str
    drafter_answer: str
    target: dict[str, Any]
    drafter: dict[str, Any]
    engine: dict[str, Any] = field(default_factory=dict)


# -- 1. accuracy: batched greedy ---------------------------------------------------------------


def _greedy_texts(wrapper: Any, split: Any, cfg: EvalConfig, desc: str) -> list[str]:
    fwd = WorldForward(wrapper)
    pixels = torch.from_numpy(split.pixels).to(wrapper.device)
    texts: list[str] = []
    exs = split.examples
    for i in tqdm(range(0, len(exs), cfg.batch_size), desc=desc, unit="batch",
                  disable=bar_disable()):
        chunk = exs[i : i + cfg.batch_size]
        batch = collate(chunk, pad_id=fwd.pad_id, expand=fwd.expand, with_answer=False,
                        device=wrapper.device)
        for ids in fwd.greedy(batch, pixels, cfg.max_new_tokens):
            texts.append(wrapper.decode_text(ids).strip())
    return texts


def accuracy_pass(cfg: EvalConfig) -> list[QuestionResult]:
    """Answer and score every question of the split (first ``limit`` clips)."""
    from evspec.loading import resolve_device

    device = resolve_device(cfg.device)
    answers: dict[str, list[str]] = {}
    splits = {}
    for role, folder in (("target", cfg.target), ("drafter", cfg.drafter)):
        model = load_world_model(folder, role=role, device=device)
        model.model.eval()
        split = load_split(cfg.data, cfg.split, model, role, workers=min(cfg.workers, 16),
                           max_clips=cfg.limit)
        answers[role] = _greedy_texts(model, split, cfg, f"{role} answers")
        splits[role] = split
        del model
    results = []
    for tex, dex, t_ans, d_ans in zip(splits["target"].examples, splits["drafter"].examples,
                                      answers["target"], answers["drafter"], strict=True):
        clip = splits["target"].clip_ids[tex.clip]
        results.append(QuestionResult(
            clip=clip, qtype=tex.qtype, question=tex.question, reference=tex.reference,
            reference_drafter=dex.reference, target_answer=t_ans, drafter_answer=d_ans,
            target=asdict(score_answer(tex.qtype, t_ans, tex.reference, tex.fields)),
            drafter=asdict(score_answer(tex.qtype, d_ans, dex.reference, tex.fields)),
        ))
    return results


# -- 2. acceptance: the engine, in a process pool ---------------------------------------------

_WORKER: dict[str, Any] = {}


def _init_worker(target: str, drafter: str, data: str) -> None:
    torch.set_num_threads(1)  # tiny models: one thread per process is fastest
    _WORKER.update(
        target=load_world_model(target, role="target"),
        drafter=load_world_model(drafter, role="drafter"),
        data=Path(data),
    )


def _engine_job(job: tuple[Any, list[tuple[int, str, str]], tuple[int, ...], int]) -> list[dict]:
    """Swept questions of one clip: target-only, then SD at each gamma, per question."""
    from evspec.data.loading import load_clip_inputs
    from evspec.decoding.drafters import make_drafter
    from evspec.decoding.engine import generate
    from evspec.models.request import Request

    entry, questions, gammas, max_new = job
    target, drafter = _WORKER["target"], _WORKER["drafter"]
    video, events = load_clip_inputs(
        entry, _WORKER["data"], n_event_images=drafter.n_event_images,
        num_frames=target.num_frames, canvas="sensor", warn_window=False,
    )
    out = []
    for index, question, qtype in questions:
        req = Request(question, video=video, event_images=events, clip_id=entry.id, qtype=qtype)
        base = generate(target, req, None, max_new_tokens=max_new)
        runs = {}
        for g in gammas:
            res = generate(target, req, make_drafter("eventgpt", target=target, draft_model=drafter),
                           gamma=g, max_new_tokens=max_new)
            acc, dra = res.stats.position_counts()
            runs[str(g)] = {
                "identical": res.tokens == base.tokens,
                "drafted": res.stats.drafted, "accepted": res.stats.accepted,
                "rounds": len(res.stats.rounds), "alpha": res.stats.alpha, "tau": res.stats.tau,
                "position_accepted": acc, "position_drafted": dra, "total_ms": res.stats.total_ms,
            }
        out.append({"index": index, "tokens": base.tokens, "text": base.text.strip(),
                    "target_ms": base.stats.total_ms, "gammas": runs})
    return out


def acceptance_pass(cfg: EvalConfig, results: list[QuestionResult]) -> bool:
    """Run the engine sweep on up to ``acceptance_per_type`` questions per type (in
    result order) and attach the runs to those results (``engine``).  Returns whether the
    sweep was cut short by ``engine_time_budget_s``."""
    if cfg.acceptance_per_type == 0:
        return False
    taken: dict[str, int] = defaultdict(int)
    chosen: list[tuple[str, tuple[int, str, str]]] = []
    for i, r in enumerate(results):
        if taken[r.qtype] < cfg.acceptance_per_type:
            taken[r.qtype] += 1
            chosen.append((r.clip, (i, r.question, r.qtype)))
    entries = {e.id: e for e in split_entries(cfg.data, cfg.split, cfg.limit)}
    # one job per question: short jobs spread evenly and keep the time budget tight
    jobs = [(entries[c], [q], cfg.gammas, cfg.max_new_tokens) for c, q in chosen]
    init = (str(cfg.target), str(cfg.drafter), str(cfg.data))
    bar = tqdm(total=sum(len(q) for _, q, _, _ in jobs), desc="engine sweep", unit="question",
               disable=bar_disable())
    if cfg.workers <= 1 or len(jobs) == 1:
        _init_worker(*init)
        done = map(_engine_job, jobs)
        pool = None
    else:
        pool = multiprocessing.get_context("spawn").Pool(
            min(cfg.workers, len(jobs)), initializer=_init_worker, initargs=init)
        done = pool.imap_unordered(_engine_job, jobs)
    deadline = None if cfg.engine_time_budget_s is None else time.perf_counter() + cfg.engine_time_budget_s
    cut = False
    try:
        for records in done:
            if deadline is not None and time.perf_counter() > deadline:
                cut = True
                tqdm.write(f"engine sweep: time budget of {cfg.engine_time_budget_s} s spent; "
                           "reporting the questions done so far")
                break
            for rec in records:
                r = results[rec["index"]]
                r.engine = {"target_text": rec["text"], "target_ms": rec["target_ms"],
                            "batched_equal": rec["text"] == r.target_answer,
                            "gammas": rec["gammas"]}
                bar.update(1)
    finally:
        bar.close()
        if pool is not None:
            if cut:
                pool.terminate()
            else:
                pool.close()
            pool.join()
        _WORKER.clear()
    return cut


def evaluate_world(cfg: EvalConfig) -> dict[str, Any]:
    """Both passes; returns the JSON-ready evaluation (summary tables + per question)."""
    from evspec.training.world.report import summarise

    t0 = time.perf_counter()
    if not (cfg.data / "manifest.json").is_file():
        raise FileNotFoundError(f"{cfg.data / 'manifest.json'} is missing: --data must be a world folder")
    world_extra(cfg.data, cfg.split)  # fails early, naming the file, when the sidecar is missing
    results = accuracy_pass(cfg)
    t1 = time.perf_counter()
    cut = acceptance_pass(cfg, results)
    t2 = time.perf_counter()
    summary = summarise(results, cfg.gammas)
    summary["acceptance"]["cut_by_time_budget"] = cut
    summary["timings"] = {"accuracy_s": t1 - t0, "engine_s": t2 - t1}
    summary["config"] = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()}
    summary["questions"] = [asdict(r) for r in results]
    return summary
