"""``train_world_model``: train one world model (target or drafter) from a world folder.

Phases: load or build the model -> pre-decode the train and validation clips -> steps
(batch -> forward -> loss on answer tokens -> AdamW, LR schedule) with a tqdm bar,
periodic validation (loss + greedy exact match) and checkpoints -> final checkpoint.
``resume`` continues from the run folder's last checkpoint with the same batches, LR and
RNG, so the losses equal those of an uninterrupted run.
"""

from __future__ import annotations

import platform
import time
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm
from evspec.progress import bar_disable

from evspec.data.runlock import holds_run_lock
from evspec.training.world.aux_heads import AuxHeads
from evspec.training.world.batching import batch_indices, collate
from evspec.training.checkpoint import (
    CONFIG_FILE,
    LOG_FILE,
    MODEL_DIR,
    STATE_FILE,
    TrainState,
    load_state,
    read_json,
    refuse_other_settings,
    save_checkpoint,
    write_json,
)
from evspec.training.loop import apply_gradients, due
from evspec.training.schedule import warmup_cosine
from evspec.training.world.config import WorldTrainConfig
from evspec.training.world.dataset import WorldSplit, load_split
from evspec.training.world.forward import WorldForward
from evspec.training.world.world_models import build_world_model, load_world_model, world_tokenizers

CALIBRATE = (20, 80)  # steps after the start timed to fit a time budget (inside warm-up)
# Config fields a resumed run may change (the rest must match the checkpoint's run).
RESUMABLE = {"stop_at", "time_budget_s", "workers", "device", "eval_interval",
             "checkpoint_interval", "log_interval", "val_generate", "val_batches"}


@dataclass
class Plan:
    """Steps the LR schedule runs to; lowered by a time budget."""

    steps: int


class BudgetPlanner:
    """Fits a run into a wall-clock deadline by lowering ``plan.steps``.

    Steps ``CALIBRATE`` (counted from the run's first step, inside the warm-up) are timed
    and the plan set to the steps that fit (``margin`` of the time left, minus ``per_eval``
    seconds per validation); at every validation the measured pace (validations included)
    re-checks it, lowering the plan again when needed (never raising it: a later cosine
    is only ever shortened).
    """

    def __init__(self, deadline: float, start: int, eval_interval: int,
                 margin: float = 0.9, per_eval: float = 2.0) -> None:
        self.deadline, self.start, self.eval_interval = deadline, start, eval_interval
        self.margin, self.per_eval = margin, per_eval
        self.t0: float | None = None
        self.per_step: float | None = None

    def _fit(self, plan: Plan, step: int, per_step: float, now: float) -> None:
        left = self.deadline - now
        evals = max(1, (plan.steps - step) // self.eval_interval)
        fit = step + int(max(0.0, self.margin * left - self.per_eval * evals) / per_step)
        if fit < plan.steps:
            plan.steps = max(step, fit)

    def after_step(self, plan: Plan, step: int, now: float) -> None:
        """Call after every step with a synchronised clock when ``needs_clock``."""
        done = step - self.start
        if done == CALIBRATE[0]:
            self.t0 = now
        elif done == CALIBRATE[1] and self.t0 is not None:
            self.per_step = (now - self.t0) / (CALIBRATE[1] - CALIBRATE[0])
            self._fit(plan, step, self.per_step, now)

    def after_eval(self, plan: Plan, step: int, now: float) -> None:
        if self.t0 is None or step - self.start <= CALIBRATE[1]:
            return
        pace = (now - self.t0) / (step - self.start - CALIBRATE[0])  # validations included
        self._fit(plan, step, pace, now)

    def needs_clock(self, step: int) -> bool:
        return step - self.start in CALIBRATE


@dataclass
class TrainResult:
    """``steps_done`` optimiser steps; ``log`` = the JSON log (also in ``out/train_log.json``)."""

    model_dir: Any
    steps_done: int
    planned_steps: int
    log: dict[str, Any] = field(default_factory=dict)


def _device(name: str) -> torch.device:
    from evspec.loading import resolve_device

    return resolve_device(name)


#: parameters never decayed although they are matrices: the vision towers' position
#: embeddings (decay pulls them back to zero, and with them the towers' only source of
#: spatial layout)
NO_DECAY = ("position_embedding",)


def _param_groups(module: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Decay matrices (weights of linear layers, token embeddings); not biases, norms or
    the vision position embeddings (:data:`NO_DECAY`)."""
    decay, keep = [], []
    for name, p in module.named_parameters():
        if p.requires_grad:
            spatial = any(key in name for key in NO_DECAY)
            (decay if p.ndim >= 2 and not spatial else keep).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": keep, "weight_decay": 0.0}]


def _check_resume(cfg: WorldTrainConfig) -> WorldTrainConfig:
    saved = WorldTrainConfig.from_dict(read_json(cfg.out / CONFIG_FILE))
    refuse_other_settings(cfg.to_dict(), saved.to_dict(), RESUMABLE | {"steps"}, cfg.out,
                          "resume with the run's settings (--config on its train_config.json) "
                          "or start a new run in another --out")
    return replace(saved, **{k: getattr(cfg, k) for k in RESUMABLE})


class _Validator:
    """Validation loss over a few batches and greedy exact match on a few questions."""

    def __init__(self, cfg: WorldTrainConfig, fwd: WorldForward, split: WorldSplit,
                 pixels: torch.Tensor):
        self.cfg, self.fwd, self.split, self.pixels = cfg, fwd, split, pixels
        self.device = fwd.wrapper.device

    def __call__(self, autocast: Any) -> dict[str, Any]:
        cfg, fwd, exs = self.cfg, self.fwd, self.split.examples
        was_training = fwd.module.training
        fwd.module.eval()
        total, count = 0.0, 0
        with torch.no_grad(), autocast():
            for i in range(cfg.val_batches):
                chunk = exs[i * cfg.batch_size : (i + 1) * cfg.batch_size]
                if not chunk:
                    break
                batch = collate(chunk, pad_id=fwd.pad_id, expand=fwd.expand, device=self.device)
                loss, n = fwd.loss(batch, self.pixels)
                total, count = total + float(loss) * int(n), count + int(n)
            answers: list[list[int]] = []
            todo = exs[: cfg.val_generate]
            for i in range(0, len(todo), cfg.batch_size):
                chunk = todo[i : i + cfg.batch_size]
                batch = collate(chunk, pad_id=fwd.pad_id, expand=fwd.expand, with_answer=False,
                                device=self.device)
                answers += fwd.greedy(batch, self.pixels, cfg.max_new_tokens)
        fwd.module.train(was_training)
        exact = sum(list(a) == list(ex.answer) for a, ex in zip(answers, todo))
        return {
            "loss": total / max(count, 1),
            "exact": exact / max(len(todo), 1),
            "n_generated": len(todo),
            "sample": fwd.wrapper.decode_text(answers[0]) if answers else "",
            "sample_reference": todo[0].reference if todo else "",
        }


@holds_run_lock("world train", lambda a: Path(a["cfg"].out))
def train_world_model(
    cfg: WorldTrainConfig, *, resume: bool = False, progress: bool = True
) -> TrainResult:
    """Train (or, with ``resume``, continue) the world model described by ``cfg``."""
    t_start = time.perf_counter()
    out = cfg.out
    if resume:
        cfg = _check_resume(cfg)
    elif (out / MODEL_DIR).exists() or (out / CONFIG_FILE).exists():
        raise FileExistsError(
            f"{out} already holds a training run; pass --resume to continue it or choose "
            "another --out"
        )
    device = _device(cfg.device)
    use_amp = cfg.amp == "bf16" or (cfg.amp == "auto" and device.type == "cuda")
    if use_amp and device.type != "cuda":
        raise ValueError("amp = 'bf16' needs a CUDA device; use amp = 'off' on the CPU")
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    def autocast() -> Any:
        return torch.autocast("cuda", dtype=torch.bfloat16) if use_amp else nullcontext()

    # -- model ---------------------------------------------------------------------------
    tokenizers = world_tokenizers(cfg.data)
    state: TrainState | None = None
    if resume:
        if not (out / MODEL_DIR / "config.json").is_file():
            raise FileNotFoundError(
                f"{out}: no checkpoint to resume ({STATE_FILE} and {MODEL_DIR}/ are written at "
                "each checkpoint); drop --resume to start a new run"
            )
        state = load_state(out)
    if state is not None:
        wrapper = load_world_model(out / MODEL_DIR, role=cfg.role, device=device)
    else:
        wrapper = build_world_model(cfg.role, cfg.preset, tokenizers, seed=cfg.seed, device=device)
    aux = None
    if cfg.aux_weight > 0:
        with torch.random.fork_rng(devices=[]):  # initial heads a function of the seed alone
            torch.manual_seed(cfg.seed + 1)
            aux = AuxHeads(cfg.role, wrapper.decoder.config.hidden_size).to(device)
        if state is not None:
            if state.aux is None:
                raise ValueError(f"{out}: the checkpoint has no auxiliary heads; "
                                 "resume with --aux-weight 0")
            aux.load_state_dict(state.aux)
    fwd = WorldForward(wrapper, aux=aux, aux_weight=cfg.aux_weight)
    fwd.module.train()

    # -- data ----------------------------------------------------------------------------
    t0 = time.perf_counter()
    train = load_split(cfg.data, "train", wrapper, cfg.role, workers=cfg.workers,
                       max_clips=cfg.max_train_clips, progress=progress, aux_labels=aux is not None)
    train_labels = None
    if train.labels is not None:  # [N, K, P] (centre [N, K, P, 2]) on the device
        train_labels = {k: torch.from_numpy(getattr(train.labels, k)).to(device)
                        for k in ("shape", "colour", "motion", "speed", "centre")}
    val = load_split(cfg.data, "val", wrapper, cfg.role, workers=cfg.workers, progress=progress)
    train_px = torch.from_numpy(train.pixels).to(device)  # [N, K, S, S, 3] uint8
    val_px = torch.from_numpy(val.pixels).to(device)
    predecode_s = time.perf_counter() - t0
    validate = _Validator(cfg, fwd, val, val_px)

    # -- optimiser and schedule ----------------------------------------------------------
    plan = Plan(state.planned_steps if state else cfg.steps)
    fused = {"fused": True} if device.type == "cuda" else {}
    groups = _param_groups(fwd.module, cfg.weight_decay)
    if aux is not None:
        groups.append({"params": list(aux.parameters()), "weight_decay": 0.0})
    opt = torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, **fused)
    params = [p for g in groups for p in g["params"]]  # what the gradient clip sees
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: warmup_cosine(s, cfg.warmup_steps, plan.steps, cfg.min_lr_ratio)
    )
    start = 0
    log: dict[str, Any] = {"train": [], "val": []}
    torch.manual_seed(cfg.seed)
    if state is not None:
        opt.load_state_dict(state.optimizer)
        sched.load_state_dict(state.scheduler)
        start = state.step
        state.restore_rng(cuda=device.type == "cuda")
        old = read_json(out / LOG_FILE) if (out / LOG_FILE).is_file() else log
        log = {"train": [r for r in old["train"] if r["step"] <= start],
               "val": [r for r in old["val"] if r["step"] <= start]}
    log.update(
        role=cfg.role, preset=cfg.preset, device=str(device), amp="bf16" if use_amp else "fp32",
        train_examples=len(train.examples), train_clips=len(train.clip_ids),
        val_examples=len(val.examples), parameters=sum(p.numel() for p in fwd.module.parameters()),
        versions={"torch": torch.__version__, "python": platform.python_version()},
    )

    def checkpoint(step: int) -> None:
        aux_state = None if aux is None else {k: v.cpu() for k, v in aux.state_dict().items()}
        save_checkpoint(out, wrapper, TrainState.capture(
            step, plan.steps, opt, scheduler=sched, cuda=device.type == "cuda", aux=aux_state))
        write_json(out / CONFIG_FILE, replace(cfg, steps=plan.steps).to_dict())
        write_json(out / LOG_FILE, {**log, "config": replace(cfg, steps=plan.steps).to_dict()})

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    # -- steps ---------------------------------------------------------------------------
    t_train = time.perf_counter()
    budget_deadline = None if cfg.time_budget_s is None else t_start + cfg.time_budget_s
    planner = None if budget_deadline is None else BudgetPlanner(budget_deadline, start,
                                                                 cfg.eval_interval)
    run_loss = torch.zeros((), device=device)
    run_parts: dict[str, Any] = {}
    run_n = 0
    t_log = time.perf_counter()
    bar = tqdm(total=plan.steps, initial=start, desc=f"train {cfg.role}", unit="step",
               disable=bar_disable(progress))
    step = start
    while step < plan.steps:
        idx = batch_indices(len(train.examples), cfg.batch_size, cfg.seed, step)
        batch = collate([train.examples[i] for i in idx], pad_id=fwd.pad_id, expand=fwd.expand,
                        device=device)
        with autocast():
            loss, _ = fwd.loss(batch, train_px, train_labels)
        apply_gradients(loss, opt, params, cfg.grad_clip, scheduler=sched)
        run_loss += loss.detach()
        for key, value in fwd.last_parts.items():
            run_parts[key] = run_parts.get(key, 0.0) + value
        run_n += 1
        step += 1
        bar.update(1)

        # a time budget: time a few steps, then plan the steps that fit (schedule included)
        if planner is not None and planner.needs_clock(step):
            sync()
            planner.after_step(plan, step, time.perf_counter())
            if planner.per_step is not None:
                log["step_seconds"] = planner.per_step
            bar.total = plan.steps
        last = step >= plan.steps or (cfg.stop_at is not None and step >= cfg.stop_at)
        if step < cfg.log_interval and step & (step - 1) == 0:  # steps 1, 2, 4, ...: early news
            bar.set_postfix(batch_loss=f"{float(loss.detach()):.4f}")
        if due(step, cfg.log_interval, last):
            sync()
            now = time.perf_counter()
            entry = {"step": step, "loss": float(run_loss) / run_n, "lr": sched.get_last_lr()[0],
                     "examples_per_s": run_n * cfg.batch_size / max(now - t_log, 1e-9),
                     "seconds": now - t_start}
            if len(run_parts) > 1:  # the answer loss and the auxiliary heads' parts
                entry["parts"] = {k: float(v) / run_n for k, v in run_parts.items()}
            log["train"].append(entry)
            bar.set_postfix(loss=f"{entry['loss']:.4f}", lr=f"{entry['lr']:.2e}")
            run_loss, run_n, t_log = torch.zeros((), device=device), 0, now
            run_parts = {}
        if due(step, cfg.eval_interval, last):
            result = {"step": step, **validate(autocast), "seconds": time.perf_counter() - t_start}
            log["val"].append(result)
            if planner is not None and not last:
                planner.after_eval(plan, step, time.perf_counter())
                bar.total = plan.steps
                last = step >= plan.steps
            tqdm.write(f"[{cfg.role}] step {step}/{plan.steps}: val loss {result['loss']:.4f}, "
                       f"exact {result['exact']:.3f} | {result['sample']!r}")
            out.mkdir(parents=True, exist_ok=True)
            write_json(out / LOG_FILE, {**log, "config": replace(cfg, steps=plan.steps).to_dict()})
        if due(step, cfg.checkpoint_interval, last):
            log["timings"] = {"predecode_s": predecode_s,
                              "train_s": time.perf_counter() - t_train}
            checkpoint(step)
        if last:
            break
        if budget_deadline is not None and time.perf_counter() > budget_deadline:
            tqdm.write(f"[{cfg.role}] time budget of {cfg.time_budget_s} s spent at step {step}; "
                       "stopping with a checkpoint")
            plan.steps = step
            log["stopped_by_time_budget"] = step
            log["timings"] = {"predecode_s": predecode_s, "train_s": time.perf_counter() - t_train}
            checkpoint(step)
            break
    bar.close()
    log["planned_steps"] = plan.steps
    log["seconds"] = time.perf_counter() - t_start
    write_json(out / LOG_FILE, {**log, "config": replace(cfg, steps=plan.steps).to_dict()})
    return TrainResult(out / MODEL_DIR, step, plan.steps, log)
