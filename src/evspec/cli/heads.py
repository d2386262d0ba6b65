"""``evspec collect | train | eval``: data for, training of, and evaluation of the trained
drafters (adapters, LoRA-distilled EventGPT, event/target heads).  Thin wrappers over
:mod:`evspec.training.heads` (``collect``, ``train``, ``eval``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from evspec.cli.choices import Canvas, Memory, Module, StoreDType, given, parse_gammas
from evspec.cli.errors import fail


def _models(target: str, draft_model: str | None, device: str, dtype: str, seed: int):
    """The target and draft model, loaded by :func:`evspec.loading.load_models`."""
    from evspec.loading import ModelSpec, load_models

    loaded = load_models(ModelSpec(target=target, draft_model=draft_model, device=device,
                                   dtype=dtype, seed=seed))
    return loaded.target, loaded.draft


TargetOpt = Annotated[str, typer.Option(help="Video-LLaVA: preset (tiny-random, 7b) or checkpoint folder.")]
DraftOpt = Annotated[str, typer.Option(help="EventGPT: preset (tiny-random, 7b) or checkpoint folder.")]
DeviceOpt = Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")]
DtypeOpt = Annotated[str, typer.Option(help="auto (bf16 on GPU, fp32 on CPU), float32, bfloat16, float16.")]
CanvasOpt = Annotated[
    Canvas,
    typer.Option(
        help="Event image canvas: auto (the manifest's: sensor for the world, else chunk), "
        "sensor, chunk (the EventGPT release's: each image sized from its own events; real "
        "checkpoints) or data."
    ),
]


def collect_cmd(
    dataset: Annotated[Path, typer.Option(help="Dataset manifest (e.g. a world's manifest.json).")],
    out: Annotated[Path, typer.Option(help="Data folder (chunked safetensors + index); reused to resume.")],
    split: Annotated[str, typer.Option(help="Manifest split: train, val or test.")] = "train",
    limit: Annotated[Optional[int], typer.Option(help="Only the first N questions of the split.")] = None,
    target: TargetOpt = "tiny-random",
    draft_model: DraftOpt = "tiny-random",
    max_new_tokens: Annotated[int, typer.Option(help="Answer length cap.")] = 64,
    topk: Annotated[int, typer.Option(help="Target log-probabilities kept per position.")] = 20,
    chunk_size: Annotated[int, typer.Option(help="Examples per safetensors chunk.")] = 256,
    memory: Annotated[Memory, typer.Option(
        help="events, or prefill (also keep EventGPT's prompt states).")] = Memory.events,
    video_features: Annotated[bool, typer.Option(help="Keep the target's video features (the aligner).")] = True,
    store_dtype: Annotated[StoreDType, typer.Option(
        help="Hidden states on disk.")] = StoreDType.bfloat16,
    canvas: CanvasOpt = Canvas.auto,
    num_chunks: Annotated[
        Optional[int], typer.Option(help="Split the questions into N chunks (with --chunk-idx; e.g. a SLURM array).")
    ] = None,
    chunk_idx: Annotated[Optional[int], typer.Option(help="This process's chunk, 0..N-1.")] = None,
    time_budget: Annotated[Optional[float], typer.Option(help="Stop cleanly after this many seconds.")] = None,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
    seed: Annotated[int, typer.Option(help="Seed of random-weight presets.")] = 0,
) -> None:
    """For each (clip, question): the target's greedy answer, then both models
    teacher-forced on that same answer; hidden states, top-K log-probs and event memory
    into chunked safetensors (resumable)."""
    from evspec.training.heads.collect import CollectConfig, collect, collect_lock_name
    from evspec.data.runlock import run_lock
    from evspec.bench.shard import select_device, shard_from_env_or_args

    try:
        sh = shard_from_env_or_args(num_chunks, chunk_idx)  # + torchrun's RANK/WORLD_SIZE/LOCAL_RANK
        device = select_device(device, sh)  # cuda:LOCAL_RANK under torchrun
        shard, num_shards = sh.index, sh.count
        cfg = CollectConfig(
            split=split, limit=limit, max_new_tokens=max_new_tokens, topk=topk, chunk_size=chunk_size,
            prefill_memory=memory == Memory.prefill, video_features=video_features,
            store_dtype=store_dtype.value, canvas=canvas.value, shard=shard,  # type: ignore[arg-type]
            num_shards=num_shards, time_budget_s=time_budget,
        )
        with run_lock(out, "collect", name=collect_lock_name(cfg)):  # before the models load
            tgt, dm = _models(target, draft_model, device, dtype, seed)
            report = collect(cfg, tgt, dm, dataset, out,
                             models={"target": target, "draft": draft_model})
    except (ValueError, FileNotFoundError) as exc:
        fail(str(exc))
        return
    note = " (stopped at the time budget)" if report.stopped_early else ""
    typer.echo(
        f"collected {report.written} new examples ({report.skipped} already there, {report.total} in shard "
        f"{shard}) into {report.out} in {report.seconds:.1f} s{note}; teacher-forced argmax differed from "
        f"the greedy token at {report.teacher_mismatch} positions"
    )


def train_cmd(
    ctx: typer.Context,
    module: Annotated[Optional[Module], typer.Option(help="The module to train.")] = None,
    data: Annotated[Optional[Path], typer.Option(
        help="Folder written by `evspec collect` (train, optionally val).")] = None,
    out: Annotated[Optional[Path], typer.Option(
        help="Run folder: best/, last/, history.jsonl, loss.png, train_config.json.")] = None,
    config: Annotated[Optional[Path], typer.Option(
        help="A run's train_config.json: its settings, for the options not given here.")] = None,
    steps: Annotated[int, typer.Option(help="Optimiser steps.")] = 2000,
    batch_size: Annotated[int, typer.Option(help="Questions per step.")] = 32,
    lr: Annotated[Optional[float], typer.Option(
        help="Peak learning rate (default: 1e-3, LoRA 2e-4).")] = None,
    warmup_steps: Annotated[int, typer.Option(help="Linear warm-up steps.")] = 50,
    eval_every: Annotated[int, typer.Option(help="Offline validation every N steps (best/ kept).")] = 200,
    save_every: Annotated[int, typer.Option(help="Save last/ every N steps.")] = 500,
    depth: Annotated[int, typer.Option(help="Heads: training-time-test steps (draft depth trained).")] = 3,
    layers: Annotated[int, typer.Option(help="Blocks (heads, attention adapter) / bottleneck blocks.")] = 1,
    heads: Annotated[int, typer.Option(help="Attention heads (0 = width / 64).")] = 0,
    rank: Annotated[int, typer.Option(help="Bottleneck width or LoRA rank (0 = default).")] = 0,
    expand: Annotated[int, typer.Option(help="Note adapter: token-expander slots.")] = 4,
    memory_source: Annotated[Memory, typer.Option(
        help="event-head memory: events or prefill.")] = Memory.events,
    kl: Annotated[Optional[float], typer.Option(help="Weight of KL(target || drafter).")] = None,
    ce: Annotated[Optional[float], typer.Option(help="Weight of cross-entropy on the target's tokens.")] = None,
    feature: Annotated[Optional[float], typer.Option(help="Auxiliary smooth-L1 to the target state.")] = None,
    cosine: Annotated[Optional[float], typer.Option(help="Auxiliary 1 - cosine to the target state.")] = None,
    draft_model: Annotated[Optional[str], typer.Option(help="LoRA: the EventGPT the data was collected with.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the initial weights and batch order.")] = 0,
    time_budget: Annotated[Optional[float], typer.Option(help="Stop (and save) after this many seconds.")] = None,
    resume: Annotated[bool, typer.Option(
        help="Continue from OUT/last when present (with the run's settings).")] = True,
    allow_changes: Annotated[bool, typer.Option(
        help="Resume even when settings differ from the run's (seed, lr, batch size)."),
    ] = False,
    progress: Annotated[bool, typer.Option(
        help="A progress bar (shown only on a terminal).")] = True,
    device: DeviceOpt = "auto",
) -> None:
    """Train one module with acceptance objectives (KL to the target, CE on its tokens),
    periodic evaluation, checkpoints with config, resume and a loss plot.  Launched as
    `torchrun --nproc-per-node N -m evspec train ...`, N processes (one per GPU) train as
    data-parallel replicas (N batches per step) and rank 0 writes."""
    from dataclasses import replace

    from evspec.training.heads.train import TrainConfig, default_weights, train
    from evspec.modules.options import ModuleOptions
    from evspec.loading import ModelSpec, load_models, resolve_device

    try:
        if lr is not None and lr <= 0:
            raise ValueError(f"--lr must be > 0, got {lr} (leave it out for the default)")
        base_cfg = None
        if config is not None:
            import json

            base_cfg = TrainConfig.from_dict(json.loads(config.read_text()))
        set_here = given(ctx)
        module = module.value if module is not None else (base_cfg.kind if base_cfg else None)
        if module is None or data is None or out is None:
            raise ValueError("--module, --data and --out are required (--module may come from "
                             "--config)")
        base = default_weights(module)
        weights = None if base_cfg is None else base_cfg.weights
        if any(w is not None for w in (kl, ce, feature, cosine)):
            weights = replace(weights or base, **{k: v for k, v in (
                ("kl", kl), ("ce", ce), ("feature", feature), ("cosine", cosine)) if v is not None})
        options = ModuleOptions(num_layers=layers, num_heads=heads, rank=rank, expand=expand,
                                memory_source=memory_source.value)
        fields = dict(kind=module, steps=steps, batch_size=batch_size, lr=lr or 0.0,
                      warmup_steps=warmup_steps, eval_every=eval_every, save_every=save_every,
                      depth=depth, seed=seed, weights=weights, time_budget_s=time_budget,
                      options=options)
        if base_cfg is not None:  # the file's settings, except the options given here
            cli_name = {"time_budget_s": "time_budget", "kind": "module"}
            opt_fields = {"num_layers": "layers", "num_heads": "heads", "rank": "rank",
                          "expand": "expand", "memory_source": "memory_source"}
            fields = {k: v for k, v in fields.items()
                      if k in ("kind", "weights") or cli_name.get(k, k) in set_here}
            opts = {k: getattr(options, k) for k, name in opt_fields.items() if name in set_here}
            fields["options"] = replace(base_cfg.options, **opts)
            cfg = replace(base_cfg, **fields)
        else:
            cfg = TrainConfig(**fields)
        from evspec.training.heads.distributed import is_main_process, rank_device

        dev = rank_device(resolve_device(device))  # under torchrun: this process's GPU
        dm = None
        if module == "lora":
            if draft_model is None:
                fail("train: --module lora needs --draft-model (the EventGPT to distil)")
            spec = ModelSpec(target=None, draft_model=draft_model, device=str(dev),
                             dtype="float32", seed=seed)
            dm = load_models(spec).draft
        result = train(cfg, data, out, device=dev, draft_model=dm, resume=resume,
                       allow_changes=allow_changes, progress=progress)
    except (ValueError, FileNotFoundError) as exc:
        fail(str(exc))
        return
    if not is_main_process():
        return  # under torchrun rank 0 reports (the replicas hold the same weights)
    best = result.best
    note = " (stopped at the time budget)" if result.stopped_early else ""
    typer.echo(
        f"{module}: {result.steps} steps in {result.seconds:.0f} s{note}; best val top-1 "
        f"{best.get('top1', float('nan')):.3f} at step {best.get('step')}; checkpoints in {out}/best and {out}/last"
    )


def eval_cmd(
    dataset: Annotated[Path, typer.Option(help="Dataset manifest with held-out clips.")],
    out: Annotated[Path, typer.Option(help="Folder: engine/ (bench records), eval.json, eval.md.")],
    drafter: Annotated[list[str], typer.Option(
        help="Repeatable: eventgpt, prompt-lookup, or LABEL=CHECKPOINT (labels a.b group seeds).")],
    target: TargetOpt = "tiny-random",
    draft_model: DraftOpt = "tiny-random",
    gamma: Annotated[str, typer.Option(
        help="Draft lengths γ, comma-separated (e.g. 1,2,4,6).")] = "1,2,4,6",
    report_gamma: Annotated[int, typer.Option(help="γ of the main table.")] = 6,
    limit: Annotated[Optional[int], typer.Option(help="First N questions of the split.")] = 60,
    split: Annotated[str, typer.Option(help="Held-out split.")] = "test",
    max_new_tokens: Annotated[int, typer.Option(help="Answer length cap.")] = 64,
    canvas: CanvasOpt = Canvas.auto,
    offline_data: Annotated[Optional[Path], typer.Option(help="Collect folder of the same split (offline top-1).")] = None,
    warmup: Annotated[int, typer.Option(help="Untimed warm-up requests.")] = 1,
    time_budget: Annotated[Optional[float], typer.Option(
        help="Start no new chunk of requests after this many seconds (the report covers finished ones).")] = None,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
    seed: Annotated[int, typer.Option(help="Seed of random-weight presets.")] = 0,
) -> None:
    """Measure each drafter in the engine (α, τ per γ, per position, per question type, c,
    speedup over target-only, lossless check) beside its offline top-1 agreement."""
    from evspec.training.heads.eval import EvalConfig, evaluate, parse_drafter

    try:
        specs = [parse_drafter(d) for d in drafter]
        gam = parse_gammas(gamma)
        cfg = EvalConfig(gammas=gam, report_gamma=report_gamma, limit=limit, split=split,
                         max_new_tokens=max_new_tokens, canvas=canvas.value, warmup=warmup,
                         seed=seed,
                         time_budget_s=time_budget)
        tgt, dm = _models(target, draft_model, device, dtype, seed)
        import sys

        evaluate(cfg, tgt, dm, dataset, specs, out, offline_data=offline_data, argv=sys.argv)
    except (ValueError, FileNotFoundError) as exc:
        fail(str(exc))
        return
    typer.echo((out / "eval.md").read_text(encoding="utf-8"))


def register(app: typer.Typer) -> None:
    """Add ``collect``, ``train`` and ``eval`` to the ``evspec`` command."""
    app.command("collect")(collect_cmd)
    app.command("train")(train_cmd)
    app.command("eval")(eval_cmd)
