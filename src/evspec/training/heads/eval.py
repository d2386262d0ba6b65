"""``evspec eval``: how well trained drafters do, measured two ways side by side.

* **Engine** (the truth): every drafter runs in evspec's speculative-decoding engine on
  held-out clips through the benchmark harness (``evspec.bench``), with the target-only
  baseline on the same requests: α, τ and c at each γ, acceptance per draft position and
  per question type, end-to-end speedup over evspec target-only, and the lossless check.
* **Offline** (cheap): top-1 agreement with the target's tokens on a ``collect`` folder of
  the same split: adapters / LoRA at the drafter's own position, heads teacher-forced
  (depth 1) and through the training-time test (depth 2, 3, ...).

Drafters are given as :class:`DrafterSpec`: a plain name (``eventgpt``, ``prompt-lookup``)
or ``LABEL=CHECKPOINT`` (the kind is read from the checkpoint).  Labels sharing the part
before the first ``.`` form a *group* (``event-head.s0``, ``event-head.s1``): the report
gives their mean and spread (seeds).

Layering note: this module drives ``evspec.bench`` and ``evspec.decoding`` (imported inside
functions) because the issue puts the evaluation verb with the modules it evaluates.
"""

from __future__ import annotations

import copy
import json
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch

from evspec.modules.checkpoint import HEAD_KINDS, load_checkpoint
from evspec.training.heads.requests import manifest_requests

PLAIN_DRAFTERS = ("eventgpt", "prompt-lookup", "self")
_OPTION = {"eventgpt-adapter": "adapter_path", "eventgpt-lora": "lora_path",
           "event-head": "head_path", "target-head": "head_path"}


@dataclass(frozen=True)
class DrafterSpec:
    """``label``: reported name; ``drafter``: the ``make_drafter`` base name;
    ``checkpoint``: trained module folder (None for plain drafters)."""

    label: str
    drafter: str
    checkpoint: Path | None = None
    kind: str | None = None

    @property
    def group(self) -> str:
        return self.label.split(".", 1)[0]

    @property
    def engine_name(self) -> str:
        """The name given to ``make_drafter`` (base name, label after ``@``)."""
        return self.drafter if self.label == self.drafter else f"{self.drafter}@{self.label}"

    def options(self) -> dict[str, Any]:
        if self.checkpoint is None:
            return {}
        return {_OPTION[self.drafter]: str(self.checkpoint)}


def parse_drafter(text: str) -> DrafterSpec:
    """``eventgpt`` | ``prompt-lookup`` | ``LABEL=CHECKPOINT_FOLDER``."""
    text = text.strip()
    if "=" not in text:
        if text not in PLAIN_DRAFTERS:
            raise ValueError(
                f"--drafter {text!r}: give a plain drafter ({', '.join(PLAIN_DRAFTERS)}) or "
                "LABEL=CHECKPOINT (a folder written by `evspec train`, e.g. event-head.s0=runs/eh0/best)"
            )
        return DrafterSpec(text, text)
    label, _, path = text.partition("=")
    label = label.strip()
    if not label or any(c in label for c in "|@ ,"):
        raise ValueError(f"--drafter {text!r}: the label must be non-empty, without '|', '@', ',' or spaces")
    ckpt = load_checkpoint(path.strip())
    return DrafterSpec(label, ckpt.drafter, Path(path.strip()), ckpt.kind)


@dataclass(frozen=True)
class EvalConfig:
    """``gammas``: draft lengths tried; ``report_gamma``: the γ of the main table (the
    largest tried when absent); ``limit``: first N questions of ``split``; ``canvas``: as
    the data was collected (``auto``: the manifest's, ``sensor`` for the world, ``chunk`` for
    real checkpoints);
    ``time_budget_s``: requests are
    measured ``chunk`` at a time and no new chunk starts after this long (the report covers
    the finished chunks)."""

    gammas: tuple[int, ...] = (1, 2, 4, 6)
    report_gamma: int = 6
    max_new_tokens: int = 48
    limit: int | None = 60
    split: str = "test"
    canvas: str = "auto"
    warmup: int = 1
    temperature: float = 0.0
    seed: int = 0
    offline_batch: int = 32
    chunk: int = 7
    time_budget_s: float | None = None

    def __post_init__(self) -> None:
        if not self.gammas or any(g < 1 for g in self.gammas):
            raise ValueError(f"EvalConfig.gammas must be integers >= 1, got {self.gammas}")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"EvalConfig.limit must be >= 1, got {self.limit}")
        if self.canvas not in ("auto", "chunk", "data", "sensor"):
            raise ValueError(f"EvalConfig.canvas {self.canvas!r}: use auto, chunk, data or sensor")
        if self.chunk < 1:
            raise ValueError(f"EvalConfig.chunk must be >= 1 request, got {self.chunk}")
        if self.time_budget_s is not None and self.time_budget_s <= 0:
            raise ValueError(f"EvalConfig.time_budget_s must be > 0, got {self.time_budget_s}")

    @property
    def main_gamma(self) -> int:
        return self.report_gamma if self.report_gamma in self.gammas else max(self.gammas)


# -- offline agreement ---------------------------------------------------------------------------


def offline_agreement(
    spec: DrafterSpec, data_dir: Path, split: str, *, device: torch.device, draft_model: Any = None, batch_size: int = 32,
) -> dict[str, float]:
    """Top-1 agreement of ``spec`` with the target's tokens on a collect folder."""
    from evspec.training.heads.batch import batches
    from evspec.modules.lora import LoraSpec, apply_lora
    from evspec.training.heads.store import CollectedData
    from evspec.training.heads.tasks import LoraTask, evaluate_task
    from evspec.training.heads.train import default_weights, make_task

    data = CollectedData.open(data_dir)
    if spec.drafter == "eventgpt":  # the naive drafter: EventGPT's own greedy guess
        correct = n = 0
        for b in batches(data, split, batch_size):
            correct += int(((b.draft_top1 == b.tokens) & b.mask).sum())
            n += int(b.mask.sum())
        return {"top1": correct / n if n else 0.0, "n": float(n)}
    if spec.checkpoint is None:
        return {}
    ckpt = load_checkpoint(spec.checkpoint)
    weights = default_weights(ckpt.kind)
    if ckpt.kind == "lora":
        if draft_model is None:
            raise ValueError("offline agreement of LoRA needs the draft model")
        net = copy.deepcopy(draft_model.model).float().to(device)
        apply_lora(net, LoraSpec.from_dict(ckpt.config))
        task = LoraTask(net, int(data.dims["shared_vocab"]), weights)
        task.load_state(ckpt.state)
    else:
        depth = int(ckpt.meta.get("train", {}).get("depth", 1)) if ckpt.kind in HEAD_KINDS else 1
        task = make_task(ckpt.kind, ckpt.config, data, weights, device=device, depth=max(depth, 3))
        task.load_state({k: v.to(device) for k, v in ckpt.state.items()})
    it = batches(data, split, batch_size, device=device, memory=task.memory, video=task.video)
    stats = evaluate_task(task, it)
    stats.pop("loss", None)
    return stats


# -- engine evaluation ---------------------------------------------------------------------------


def _by_qtype(records: list[dict], gamma: int) -> dict[str, dict[str, dict[str, float | None]]]:
    """qtype -> drafter -> {alpha, tau, n} at ``gamma``, from the engine records."""
    from evspec.bench.summary import summarize

    out: dict[str, dict[str, dict[str, float | None]]] = defaultdict(dict)
    qtypes = sorted({r.get("qtype") or "?" for r in records})
    for qt in qtypes:
        sub = [r for r in records if (r.get("qtype") or "?") == qt]
        for s in summarize(sub):
            if s.kind == "spec" and s.gamma == gamma:
                out[qt][s.drafter] = {"alpha": s.alpha, "tau": s.tau, "n": s.n_ok}
    return dict(out)


def evaluate(
    cfg: EvalConfig,
    target: Any,
    draft_model: Any,
    dataset: str | Path,
    drafters: list[DrafterSpec],
    out: str | Path,
    *,
    offline_data: str | Path | None = None,
    progress: bool = True,
    argv: list[str] | None = None,
) -> dict[str, Any]:
    """Run the engine evaluation (and the offline one when ``offline_data`` is given);
    writes ``OUT/engine/`` (bench records), ``OUT/eval.json`` and ``OUT/eval.md``."""
    from evspec.training.heads.report import render_eval, summarize_eval
    from evspec.bench.backend import EngineBackend
    from evspec.bench.config import BenchConfig, BenchItem
    from evspec.bench.harness import run_bench
    from evspec.bench.records import RECORDS_FILE, read_records
    from evspec.bench.summary import summarize
    from evspec.loading import ClipSizes

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    labels = [d.label for d in drafters]
    if len(set(labels)) != len(labels):
        raise ValueError(f"drafter labels must be unique: {labels}")
    device = target.lm_head.weight.device

    offline: dict[str, dict[str, float]] = {}
    if offline_data is not None:
        for spec in drafters:
            try:
                offline[spec.label] = offline_agreement(
                    spec, Path(offline_data), cfg.split, device=device, draft_model=draft_model,
                    batch_size=cfg.offline_batch,
                )
            except (ValueError, FileNotFoundError) as exc:
                offline[spec.label] = {"error": str(exc)}  # type: ignore[dict-item]

    sizes = ClipSizes.of(target, draft_model)
    reqs = manifest_requests(dataset, (cfg.split,), num_frames=sizes.num_frames,
                             n_event_images=sizes.n_event_images, canvas=cfg.canvas,
                             limit=cfg.limit)  # type: ignore[arg-type]
    items = [BenchItem(r.key, r.load, clip_id=r.clip_id, qtype=r.qtype, question=r.question) for r in reqs]
    names = {d.label: d.engine_name for d in drafters}
    bench_cfg = BenchConfig(
        drafters=("none", *names.values()), gammas=tuple(cfg.gammas), temperature=cfg.temperature,
        max_new_tokens=cfg.max_new_tokens, seed=cfg.seed, warmup=cfg.warmup, hf_baseline=False,
        dataset=str(Path(dataset).resolve()),
    )
    backend = EngineBackend(target, draft_model, drafter_options={d.engine_name: d.options() for d in drafters},
                            info={"evaluation": "evspec eval"})
    started = time.perf_counter()
    done: list[BenchItem] = []
    step = cfg.chunk if cfg.time_budget_s is not None else len(items)  # one harness run without a budget
    for start in range(0, len(items), step):
        if done and cfg.time_budget_s is not None and time.perf_counter() - started > cfg.time_budget_s:
            break
        part = items[: start + step]  # finished requests are skipped (resume)
        run_bench(replace(bench_cfg, warmup=cfg.warmup if start == 0 else 0), part, backend, out / "engine",
                  argv=argv, progress=progress)
        done = part
    ids = {it.request_id for it in done}
    records = [r for r in read_records(out / "engine" / RECORDS_FILE) if r["request_id"] in ids]
    summaries = summarize(records)
    by_name = {(s.drafter, s.gamma): s for s in summaries}
    result = summarize_eval(
        cfg, drafters, names, by_name, offline, _by_qtype(records, cfg.main_gamma),
        n_requests=len(done),
    )
    result["config"] = {**asdict(cfg), "gammas": list(cfg.gammas)}
    result["drafters"] = [{"label": d.label, "drafter": d.drafter, "kind": d.kind,
                           "checkpoint": None if d.checkpoint is None else str(d.checkpoint)} for d in drafters]
    (out / "eval.json").write_text(json.dumps(result, indent=1, default=_jsonable) + "\n", encoding="utf-8")
    (out / "eval.md").write_text(render_eval(result), encoding="utf-8")
    return result


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "__dataclass_fields__"):
        return asdict(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


__all__ = ["DrafterSpec", "EvalConfig", "evaluate", "offline_agreement", "parse_drafter"]
