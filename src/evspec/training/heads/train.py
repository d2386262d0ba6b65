"""``evspec train``: fit one module on a ``collect`` folder.

Phases: open data + frozen target tensors -> build the task (module + objective) ->
resume from ``OUT/last`` when present -> loop (AdamW, linear warm-up then cosine decay,
gradient clipping) with a progress bar -> every ``eval_every`` steps an offline evaluation
on the validation split (loss, top-1 agreement; the best is kept in ``OUT/best``) ->
``OUT/last`` (+ optimizer state) every ``save_every`` steps and at the end, with
``history.jsonl`` and ``loss.png``.

Checkpoints carry their config, the data dims and the target's fingerprint, so a drafter
refuses a head trained for another target.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm
from evspec.progress import bar_disable

from evspec.data.runlock import holds_run_lock
from evspec.modules.checkpoint import (
    ADAPTER_KINDS, HEAD_KINDS, MODULE_KINDS, build_module, load_checkpoint, save_checkpoint,
)
from evspec.modules.lora import LoraSpec, apply_lora
from evspec.modules.options import ModuleOptions, module_config
from evspec.training.checkpoint import (
    CONFIG_FILE, STATE_FILE, TrainState, load_state, refuse_other_settings, save_state,
)
from evspec.training.config import config_keys
from evspec.training.heads.batch import batches
from evspec.training.heads.curves import plot_history
from evspec.training.heads.distributed import DataParallel, is_main_process
from evspec.training.heads.objectives import LossWeights
from evspec.training.heads.store import CollectedData
from evspec.training.heads.tasks import AdapterTask, HeadTask, LoraTask, Task, evaluate_task
from evspec.training.loop import apply_gradients, due
from evspec.training.schedule import warmup_cosine

RESUME_FIX = "delete it (and last/) or use --no-resume to start over"


def default_weights(kind: str) -> LossWeights:
    """Token objectives first; heads add the feature regression they need to draft deep."""
    if kind in HEAD_KINDS:
        return LossWeights(kl=1.0, ce=1.0, feature=1.0)
    if kind == "lora":
        return LossWeights(kl=1.0, ce=0.5)
    return LossWeights(kl=1.0, ce=1.0, cosine=0.1)


@dataclass(frozen=True)
class TrainConfig:
    """One training run.  ``lr`` 0 = the kind's default (1e-3 modules, 2e-4 LoRA), warmed
    up over ``warmup_steps`` and decayed to ``lr * min_lr_ratio`` (``training.schedule``);
    ``depth``: training-time-test steps of a head (draft depth trained for);
    ``weights``: None = :func:`default_weights`; ``eval_limit``: validation examples per
    evaluation; ``time_budget_s``: stop (and save) after this long."""

    kind: str
    steps: int = 2000
    batch_size: int = 32
    lr: float = 0.0
    weight_decay: float = 0.0
    warmup_steps: int = 50
    min_lr_ratio: float = 0.1
    grad_clip: float = 1.0
    eval_every: int = 200
    eval_limit: int | None = 512
    save_every: int = 500
    log_every: int = 10
    seed: int = 0
    depth: int = 3
    options: ModuleOptions = field(default_factory=ModuleOptions)
    weights: LossWeights | None = None
    time_budget_s: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in MODULE_KINDS:
            raise ValueError(f"TrainConfig.kind {self.kind!r}: choose one of {', '.join(MODULE_KINDS)}")
        for name in ("steps", "batch_size", "eval_every", "save_every", "log_every", "depth"):
            if getattr(self, name) < 1:
                raise ValueError(f"TrainConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.lr < 0 or self.weight_decay < 0 or self.warmup_steps < 0 or self.grad_clip < 0:
            raise ValueError("TrainConfig: lr, weight_decay, warmup_steps and grad_clip must be >= 0")
        if not 0 <= self.min_lr_ratio <= 1:
            raise ValueError(f"TrainConfig.min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        if self.time_budget_s is not None and self.time_budget_s <= 0:
            raise ValueError(f"TrainConfig.time_budget_s must be > 0, got {self.time_budget_s}")

    @property
    def learning_rate(self) -> float:
        return self.lr or (2e-4 if self.kind == "lora" else 1e-3)

    @property
    def loss_weights(self) -> LossWeights:
        return self.weights or default_weights(self.kind)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["weights"] = self.loss_weights.to_dict()
        d["options"]["lora_targets"] = list(self.options.lora_targets)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """The inverse of :meth:`to_dict` (a run's ``train_config.json``)."""
        d = config_keys(cls, d)
        if isinstance(d.get("options"), dict):
            opts = dict(d["options"])
            if "lora_targets" in opts:
                opts["lora_targets"] = tuple(opts["lora_targets"])
            d["options"] = ModuleOptions(**opts)
        if isinstance(d.get("weights"), dict):
            d["weights"] = LossWeights(**d["weights"])
        return cls(**d)


@dataclass
class TrainResult:
    out: Path
    steps: int
    best: dict[str, float]
    last: dict[str, float]
    seconds: float
    stopped_early: bool


def make_task(
    kind: str, config: dict[str, Any], data: CollectedData, weights: LossWeights, *,
    device: torch.device, depth: int = 1, draft_model: Any = None,
) -> Task:
    """The task of ``kind`` with a fresh module built from ``config``."""
    dims = data.dims
    if kind == "lora":
        if draft_model is None:
            raise ValueError("training LoRA needs the EventGPT it adapts: pass --draft-model")
        if int(draft_model.lm_head.weight.shape[1]) != int(dims["draft_hidden"]):
            raise ValueError("--draft-model is not the EventGPT this data was collected with (hidden width differs)")
        net = draft_model.model.to(device)
        apply_lora(net, LoraSpec.from_dict(config))
        net.train()
        return LoraTask(net, int(dims["shared_vocab"]), weights)
    frozen = {k: v.to(device) for k, v in data.frozen().items()}
    module = build_module(kind, config).to(device)  # type: ignore[union-attr]
    if kind in ADAPTER_KINDS:
        if module.needs_context and not data.header.get("video_features"):
            raise ValueError(f"{data.folder}: the aligner needs video features; collect with --video-features")
        return AdapterTask(kind, module, frozen["lm_head.weight"], int(dims["shared_vocab"]), weights)
    if kind == "event-head" and module.config.memory_source == "prefill" and not data.header.get("prefill_memory"):
        raise ValueError(f"{data.folder}: memory 'prefill' needs EventGPT prompt states; collect with --memory prefill")
    return HeadTask(kind, module, frozen["lm_head.weight"], frozen["embed_tokens.weight"], weights, depth)


def _lr_at(step: int, cfg: TrainConfig, time_frac: float = 0.0) -> float:
    """Warm-up, then cosine decay to ``cfg.min_lr_ratio`` over the run; the run's end is the
    step count or the time budget, whichever comes first (``time_frac`` = elapsed / budget)."""
    return warmup_cosine(step, cfg.warmup_steps, cfg.steps, cfg.min_lr_ratio,
                         progress=time_frac, base=cfg.learning_rate)


#: TrainConfig fields a resumed run may change (the others must match the checkpoint's run)
RESUMABLE = frozenset({"steps", "eval_every", "eval_limit", "save_every", "log_every",
                       "time_budget_s"})


def _batch_stream(data: CollectedData, task: Task, cfg: TrainConfig, device: torch.device,
                  start_step: int = 0):
    """Training batches from optimiser step ``start_step`` on: epoch e is the train split
    shuffled with a seed of (``cfg.seed``, e), so a resumed run sees the batches the
    uninterrupted run would have seen."""
    per_epoch = -(-data.count("train") // cfg.batch_size)  # ceil: the last batch may be short
    epoch, skip = divmod(start_step, per_epoch)
    while True:
        stream = batches(data, "train", cfg.batch_size, device=device, memory=task.memory,
                         video=task.video, shuffle=True, seed=cfg.seed * 100_003 + epoch)
        for i, batch in enumerate(stream):
            if i >= skip:
                yield batch
        skip = 0
        epoch += 1


def _check_resume(saved: dict[str, Any] | None, cfg: TrainConfig, out: Path) -> None:
    """Refuse to continue a run with settings other than the ones it started with."""
    refuse_other_settings(cfg.to_dict(), saved, RESUMABLE, out,
                          "resume with the run's settings (--config on its train_config.json), "
                          "pass --allow-changes to continue anyway, or --no-resume with another "
                          "--out")


def train(cfg: TrainConfig, data_dir: str | Path, out: str | Path, **kwargs: Any) -> TrainResult:
    """Train ``cfg.kind`` on the ``collect`` folder ``data_dir`` into ``out`` (see
    :func:`_train`), holding ``out``'s run lock; under ``torchrun`` only rank 0 writes
    ``out``, so only rank 0 takes the lock."""
    if is_main_process():
        return _train_locked(cfg, data_dir, out, **kwargs)
    return _train(cfg, data_dir, out, **kwargs)


@holds_run_lock("train", lambda a: Path(a["out"]))
def _train_locked(cfg: TrainConfig, data_dir: str | Path, out: str | Path,
                  **kwargs: Any) -> TrainResult:
    return _train(cfg, data_dir, out, **kwargs)


def _train(
    cfg: TrainConfig,
    data_dir: str | Path,
    out: str | Path,
    *,
    device: str | torch.device = "cpu",
    draft_model: Any = None,
    resume: bool = True,
    progress: bool = True,
    allow_changes: bool = False,
) -> TrainResult:
    """Train ``cfg.kind`` on the ``collect`` folder ``data_dir`` into ``out``.

    With ``resume`` a run in ``out`` continues from ``out/last`` (same batches as an
    uninterrupted run), provided its settings match ``cfg`` except :data:`RESUMABLE` ones
    (``allow_changes=True`` continues anyway).  ``out/train_config.json`` records ``cfg``.
    Under ``torchrun`` (``WORLD_SIZE`` > 1) the processes train as data-parallel replicas
    (:mod:`evspec.training.heads.distributed`); rank 0 evaluates and writes ``out``."""
    start = time.perf_counter()
    out, device = Path(out), torch.device(device)
    dp = DataParallel.from_env(device)
    device = dp.device(device)
    data = CollectedData.open(data_dir)
    if data.count("train") == 0:
        raise ValueError(f"{data_dir}: no train examples (collect with --split train)")
    val_split = "val" if data.count("val") else "train"
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    mcfg = module_config(cfg.kind, data.dims, cfg.options)
    task = make_task(cfg.kind, mcfg, data, cfg.loss_weights, device=device, depth=cfg.depth, draft_model=draft_model)
    params = task.trainable()
    opt = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    step, history, best = 0, [], {}
    state_path = out / STATE_FILE
    if resume and state_path.is_file() and (out / "last").is_dir():
        ckpt = load_checkpoint(out / "last")
        if ckpt.kind != cfg.kind or ckpt.config != mcfg:
            raise ValueError(f"{out}: holds a different module ({ckpt.kind}); use another --out or --no-resume")
        if not allow_changes:
            _check_resume(ckpt.meta.get("train"), cfg, out)
        task.load_state({k: v.to(device) for k, v in ckpt.state.items()})
        saved = load_state(out, RESUME_FIX)
        opt.load_state_dict(saved.optimizer)
        saved.restore_rng(cuda=device.type == "cuda")
        step, best = saved.step, dict(ckpt.meta.get("best", {}))
        history = _read_history(out)
    meta_base = {"dims": data.dims, "target_fingerprint": data.dims.get("target_fingerprint"),
                 "train": cfg.to_dict(), "data": str(Path(data_dir).resolve())}

    def evaluate() -> dict[str, float]:
        it = batches(data, val_split, cfg.batch_size, device=device, memory=task.memory,
                     video=task.video, limit=cfg.eval_limit)
        return evaluate_task(task, it)

    def save(name: str, metrics: dict[str, float]) -> None:
        meta = {**meta_base, "step": step, "metrics": metrics, "best": best, "val_split": val_split}
        save_checkpoint(out / name, cfg.kind, mcfg, task.state_dict(), meta)

    def save_last(metrics: dict[str, float]) -> None:
        save("last", metrics)
        save_state(out, TrainState.capture(step, cfg.steps, opt, cuda=device.type == "cuda"))
        _write_history(out, history)
        plot_history(history, out / "loss.png", f"{cfg.kind} on {Path(data_dir).name}")

    out.mkdir(parents=True, exist_ok=True)
    if dp.is_main:
        (out / CONFIG_FILE).write_text(json.dumps(cfg.to_dict(), indent=1) + "\n",
                                       encoding="utf-8")
    # each optimiser step takes one batch per replica: a resumed run skips step * replicas
    stream = dp.shard(_batch_stream(data, task, cfg, device, start_step=step * dp.world_size))
    task.train(True)
    stopped = False
    last_metrics: dict[str, float] = {}
    bar = tqdm(total=cfg.steps, initial=step, desc=f"train {cfg.kind}", unit="step",
               disable=bar_disable(progress) or not dp.is_main)
    running = 0.0
    loop_start = time.perf_counter()
    while step < cfg.steps:
        time_frac = 0.0
        if cfg.time_budget_s is not None:  # the budget covers the loop; setup is not counted
            time_frac = dp.max((time.perf_counter() - loop_start) / cfg.time_budget_s, device)
            if time_frac >= 1.0:
                stopped = True
                break
        batch = next(stream)
        lr = _lr_at(step, cfg, time_frac)
        for g in opt.param_groups:
            g["lr"] = lr
        loss, stats = task.loss(batch)
        apply_gradients(loss, opt, params, cfg.grad_clip, reduce=dp.average_gradients)
        step += 1
        value = float(loss.detach())
        running = value if step == 1 else 0.9 * running + 0.1 * value
        bar.update(1)
        bar.set_postfix(loss=f"{running:.3f}")
        if due(step, cfg.log_every, step == 1):
            n = stats.get("n", 0) or 1
            history.append({"kind": "train", "step": step, "loss": value,
                            "top1": stats.get("correct", 0) / n, "lr": lr})
        if dp.is_main and due(step, cfg.eval_every, step == cfg.steps):
            last_metrics = evaluate()
            history.append({"kind": "val", "step": step, **last_metrics})
            bar.write(f"step {step}: val loss {last_metrics['loss']:.4f} top-1 {last_metrics.get('top1', 0):.3f}")
            if not best or (last_metrics.get("top1", 0), -last_metrics["loss"]) > (best.get("top1", 0), -best["loss"]):
                best = {"step": step, **last_metrics}
                save("best", last_metrics)
        if dp.is_main and due(step, cfg.save_every):
            save_last(last_metrics)
    bar.close()
    if not dp.is_main:  # the replicas' weights equal rank 0's, which writes them
        dp.barrier()
        dp.close()
        return TrainResult(out, step, best, last_metrics, time.perf_counter() - start, stopped)
    if not last_metrics or history[-1].get("step") != step:
        last_metrics = evaluate()
        history.append({"kind": "val", "step": step, **last_metrics})
        if not best or (last_metrics.get("top1", 0), -last_metrics["loss"]) > (best.get("top1", 0), -best["loss"]):
            best = {"step": step, **last_metrics}
            save("best", last_metrics)
    save_last(last_metrics)
    dp.barrier()
    dp.close()
    return TrainResult(out, step, best, last_metrics, time.perf_counter() - start, stopped)


def _write_history(out: Path, history: list[dict]) -> None:
    (out / "history.jsonl").write_text("".join(json.dumps(h) + "\n" for h in history), encoding="utf-8")


def _read_history(out: Path) -> list[dict]:
    path = out / "history.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]

