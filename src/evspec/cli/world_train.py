"""``evspec world train | eval | pack``: train, evaluate and ship the world models.

Thin wrappers over :mod:`evspec.training` (``train_world_model``, ``evaluate_world``,
``pack_world_assets``).  ``register_into(world_app)`` adds the verbs to the ``world`` group.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from evspec.cli.choices import Amp, Role, given, parse_gammas
from evspec.cli.errors import fail


#: ``world train`` options -> the WorldTrainConfig fields they set (same name otherwise)
_TRAIN_FIELDS = {"eval_every": "eval_interval", "save_every": "checkpoint_interval",
                 "time_budget": "time_budget_s"}


def train(
    ctx: typer.Context,
    role: Annotated[Optional[Role], typer.Option(
        help="target (Video-LLaVA architecture) or drafter (EventGPT).")] = None,
    data: Annotated[Optional[Path], typer.Option(
        help="World folder from `evspec world generate`.")] = None,
    out: Annotated[Optional[Path], typer.Option(
        help="Run folder: model/, train_state.pt, train_log.json, train_config.json.")] = None,
    config: Annotated[Optional[Path], typer.Option(
        help="A run's train_config.json: its settings, for the options not given here.")] = None,
    preset: Annotated[str, typer.Option(help="Model shapes: world, or world-micro (tests).")] = "world",
    steps: Annotated[int, typer.Option(help="Optimiser steps (the cosine schedule ends there).")] = 4000,
    batch_size: Annotated[int, typer.Option(help="Questions per step.")] = 64,
    lr: Annotated[float, typer.Option(help="Peak learning rate (AdamW).")] = 1e-3,
    warmup_steps: Annotated[int, typer.Option(help="Linear warm-up steps.")] = 100,
    weight_decay: Annotated[float, typer.Option(help="AdamW weight decay (matrices only).")] = 0.05,
    eval_every: Annotated[int, typer.Option(help="Validate every N steps.")] = 500,
    val_generate: Annotated[int, typer.Option(help="Validation questions decoded greedily.")] = 64,
    save_every: Annotated[int, typer.Option(help="Checkpoint every N steps.")] = 1000,
    seed: Annotated[int, typer.Option(help="Seed of the initial weights and the batch order.")] = 0,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:1, ...")] = "auto",
    amp: Annotated[Amp, typer.Option(help="auto (bf16 on CUDA), bf16, or off.")] = Amp.auto,
    workers: Annotated[int, typer.Option(help="Processes that pre-decode clips (0 = cores).")] = 0,
    time_budget: Annotated[Optional[float], typer.Option(
        help="Fit the run into this many seconds (default: no budget).")] = None,
    max_train_clips: Annotated[int, typer.Option(help="Use only N training clips (0 = all).")] = 0,
    stop_at: Annotated[int, typer.Option(help="Stop after this step, as if interrupted (0 = no).")] = 0,
    resume: Annotated[bool, typer.Option(
        help="Continue the run in OUT when there is one (with the same settings); --no-resume "
             "refuses an existing run.")] = True,
    aux_weight: Annotated[float, typer.Option(
        help="Weight of the training-only per-patch auxiliary heads (shape, colour, centre, "
             "motion from the scene specs); 0 = answers only.")] = 1.0,
    export_fp16: Annotated[
        Optional[Path], typer.Option(help="Also write the final model in fp16 to this folder.")
    ] = None,
    progress: Annotated[bool, typer.Option(
        help="Progress bars (shown only on a terminal).")] = True,
) -> None:
    """Train the world target or drafter on a generated world (progress bar, periodic
    validation, checkpoints, resume)."""
    import json
    from dataclasses import replace

    from evspec.training.checkpoint import CONFIG_FILE
    from evspec.training.world.config import WorldTrainConfig
    from evspec.training.world.loop import train_world_model
    from evspec.training.world.world_models import export_fp16 as export

    try:
        values = dict(
            role=None if role is None else role.value, data=data, out=out, preset=preset,
            steps=steps, batch_size=batch_size,
            lr=lr, warmup_steps=warmup_steps, weight_decay=weight_decay,
            eval_every=eval_every, val_generate=val_generate, save_every=save_every, seed=seed,
            device=device, amp=amp.value, workers=workers, time_budget=time_budget,
            max_train_clips=max_train_clips, stop_at=stop_at or None, aux_weight=aux_weight,
        )
        fields = {_TRAIN_FIELDS.get(k, k): v for k, v in values.items()}
        if config is not None:
            base = WorldTrainConfig.from_dict(json.loads(config.read_text()))
            set_here = given(ctx)
            fields = {_TRAIN_FIELDS.get(k, k): v for k, v in values.items() if k in set_here}
            cfg = replace(base, **fields)
        else:
            if role is None or data is None or out is None:
                raise ValueError("--role, --data and --out are required (or --config FILE)")
            cfg = WorldTrainConfig(**fields)
        again = resume and (cfg.out / CONFIG_FILE).is_file()
        result = train_world_model(cfg, resume=again, progress=progress)
        if export_fp16 is not None:
            export(result.model_dir, export_fp16)
    except (ValueError, FileNotFoundError, FileExistsError) as exc:
        fail(str(exc))
        return
    val = (result.log.get("val") or [{}])[-1]
    typer.echo(
        f"{cfg.role}: {result.steps_done}/{result.planned_steps} steps in "
        f"{result.log.get('seconds', 0):.0f} s; val loss {val.get('loss', float('nan')):.4f}, "
        f"exact {val.get('exact', float('nan')):.3f}; checkpoint {result.model_dir}"
        + (f"; fp16 copy {export_fp16}" if export_fp16 is not None else "")
    )


def evaluate(
    target: Annotated[Path, typer.Option(help="Target checkpoint (or run) folder.")],
    draft_model: Annotated[Path, typer.Option(
        help="Drafter (EventGPT) checkpoint (or run) folder.")],
    data: Annotated[Path, typer.Option(help="World folder (or the shipped assets folder).")],
    split: Annotated[str, typer.Option(help="Split to evaluate (held-out: test).")] = "test",
    limit: Annotated[int, typer.Option(help="Use the first N clips of the split (0 = all).")] = 0,
    acceptance_per_type: Annotated[
        int, typer.Option(help="Questions per type in the engine sweep (0 = skip it).")
    ] = 12,
    gamma: Annotated[str, typer.Option(
        help="Draft lengths γ of the sweep, comma-separated.")] = "1,2,3,4,5,6,7,8",
    max_new_tokens: Annotated[int, typer.Option(help="Answer length limit.")] = 64,
    device: Annotated[str, typer.Option(help="Device of the batched accuracy pass.")] = "auto",
    workers: Annotated[int, typer.Option(help="CPU processes of the engine sweep (0 = cores).")] = 0,
    time_budget: Annotated[Optional[float], typer.Option(
        help="Stop the engine sweep after this many seconds (default: no budget).")] = None,
    out: Annotated[Path, typer.Option(help="Folder for eval.md and eval.json.")] = Path("world_eval"),
) -> None:
    """Per-question-type accuracy of both models and the naive acceptance (α, τ per γ,
    per type, per position) of the eventgpt drafter; writes OUT/eval.md and OUT/eval.json."""
    import json

    from evspec.training.world.evaluate import EvalConfig, evaluate_world
    from evspec.training.world.report import to_markdown
    from evspec.training.world.assets import _model_dir

    try:
        cfg = EvalConfig(
            target=_model_dir(target)[0], drafter=_model_dir(draft_model)[0], data=data,
            split=split,
            limit=limit, gammas=parse_gammas(gamma),
            acceptance_per_type=acceptance_per_type, max_new_tokens=max_new_tokens,
            device=device, workers=workers, engine_time_budget_s=time_budget,
        )
        summary = evaluate_world(cfg)
    except (ValueError, FileNotFoundError) as exc:
        fail(str(exc))
        return
    out.mkdir(parents=True, exist_ok=True)
    (out / "eval.json").write_text(json.dumps(summary, indent=1) + "\n")
    report = to_markdown(summary)
    (out / "eval.md").write_text(report)
    typer.echo(report)


def pack(
    data: Annotated[Path, typer.Option(help="World folder the models were trained on.")],
    target: Annotated[Path, typer.Option(help="Target run (or checkpoint) folder.")],
    draft_model: Annotated[Path, typer.Option(
        help="Drafter (EventGPT) run (or checkpoint) folder.")],
    out: Annotated[Path, typer.Option(help="New asset folder (evspec/assets/world layout).")],
    clips: Annotated[int, typer.Option(help="Held-out test clips to ship (at most 10).")] = 8,
    notes: Annotated[Optional[Path], typer.Option(help="Markdown appended to the README.")] = None,
) -> None:
    """Export both models in fp16 with the tokenizer and a few test clips, for shipping."""
    from evspec.training.world.assets import pack_world_assets

    try:
        text = notes.read_text() if notes is not None else ""
        folder = pack_world_assets(data, target, draft_model, out, clips=clips, notes=text)
    except (ValueError, FileNotFoundError, FileExistsError) as exc:
        fail(str(exc))
        return
    size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    typer.echo(f"packed {folder} ({size / 1e6:.1f} MB)")


def register_into(world_app: typer.Typer) -> None:
    """Add ``train``, ``eval`` and ``pack`` to the ``world`` verb group."""
    world_app.command("train")(train)
    world_app.command("eval")(evaluate)
    world_app.command("pack")(pack)
