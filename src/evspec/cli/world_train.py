"""``evspec world train | eval | pack``: train, evaluate and ship the world models.

Thin wrappers over :mod:`evspec.training` (``train_world_model``, ``evaluate_world``,
``pack_world_assets``).  ``register_into(world_app)`` adds the verbs to the ``world`` group.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from evspec.cli.errors import fail


def _fail(message: str, code: int = 1) -> None:
    fail(message, code)


def train(
    role: Annotated[str, typer.Option(help="target (Video-LLaVA architecture) or drafter (EventGPT).")],
    data: Annotated[Path, typer.Option(help="World folder from `evspec world generate`.")],
    out: Annotated[Path, typer.Option(help="Run folder: model/, train_state.pt, train_log.json.")],
    preset: Annotated[str, typer.Option(help="Model shapes: world, or world-micro (tests).")] = "world",
    steps: Annotated[int, typer.Option(help="Optimiser steps (the cosine schedule ends there).")] = 4000,
    batch_size: Annotated[int, typer.Option(help="Questions per step.")] = 64,
    lr: Annotated[float, typer.Option(help="Peak learning rate (AdamW).")] = 1e-3,
    warmup_steps: Annotated[int, typer.Option(help="Linear warm-up steps.")] = 100,
    weight_decay: Annotated[float, typer.Option(help="AdamW weight decay (matrices only).")] = 0.05,
    eval_interval: Annotated[int, typer.Option(help="Validate every N steps.")] = 500,
    val_generate: Annotated[int, typer.Option(help="Validation questions decoded greedily.")] = 64,
    checkpoint_interval: Annotated[int, typer.Option(help="Checkpoint every N steps.")] = 1000,
    seed: Annotated[int, typer.Option(help="Seed of the initial weights and the batch order.")] = 0,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:1, ...")] = "auto",
    amp: Annotated[str, typer.Option(help="auto (bf16 on CUDA), bf16, or off.")] = "auto",
    workers: Annotated[int, typer.Option(help="Processes that pre-decode clips (0 = cores).")] = 0,
    time_budget_s: Annotated[
        float, typer.Option(help="Fit the run into this many seconds (0 = no budget).")
    ] = 0.0,
    max_train_clips: Annotated[int, typer.Option(help="Use only N training clips (0 = all).")] = 0,
    stop_at: Annotated[int, typer.Option(help="Stop after this step, as if interrupted (0 = no).")] = 0,
    resume: Annotated[bool, typer.Option(help="Continue the run in OUT from its checkpoint.")] = False,
    aux_weight: Annotated[float, typer.Option(
        help="Weight of the training-only per-patch auxiliary heads (shape, colour, centre, "
             "motion from the scene specs); 0 = answers only.")] = 1.0,
    export_fp16: Annotated[
        Path | None, typer.Option(help="Also write the final model in fp16 to this folder.")
    ] = None,
) -> None:
    """Train the world target or drafter on a generated world (progress bar, periodic
    validation, checkpoints, --resume)."""
    from evspec.training.config import WorldTrainConfig
    from evspec.training.loop import train_world_model
    from evspec.training.world_models import export_fp16 as export

    try:
        cfg = WorldTrainConfig(
            role=role, data=data, out=out, preset=preset, steps=steps, batch_size=batch_size,
            lr=lr, warmup_steps=warmup_steps, weight_decay=weight_decay,
            eval_interval=eval_interval, val_generate=val_generate,
            checkpoint_interval=checkpoint_interval, seed=seed, device=device, amp=amp,
            workers=workers, time_budget_s=time_budget_s or None,
            max_train_clips=max_train_clips, stop_at=stop_at or None, aux_weight=aux_weight,
        )
        result = train_world_model(cfg, resume=resume)
        if export_fp16 is not None:
            export(result.model_dir, export_fp16)
    except (ValueError, FileNotFoundError, FileExistsError) as exc:
        _fail(str(exc))
        return
    val = (result.log.get("val") or [{}])[-1]
    typer.echo(
        f"{role}: {result.steps_done}/{result.planned_steps} steps in "
        f"{result.log.get('seconds', 0):.0f} s; val loss {val.get('loss', float('nan')):.4f}, "
        f"exact {val.get('exact', float('nan')):.3f}; checkpoint {result.model_dir}"
        + (f"; fp16 copy {export_fp16}" if export_fp16 is not None else "")
    )


def evaluate(
    target: Annotated[Path, typer.Option(help="Target checkpoint (or run) folder.")],
    drafter: Annotated[Path, typer.Option(help="Drafter checkpoint (or run) folder.")],
    data: Annotated[Path, typer.Option(help="World folder (or the shipped assets folder).")],
    split: Annotated[str, typer.Option(help="Split to evaluate (held-out: test).")] = "test",
    limit: Annotated[int, typer.Option(help="Use the first N clips of the split (0 = all).")] = 0,
    acceptance_per_type: Annotated[
        int, typer.Option(help="Questions per type in the engine sweep (0 = skip it).")
    ] = 12,
    gammas: Annotated[str, typer.Option(help="Draft lengths of the sweep, e.g. 1,2,4,8.")] = "1,2,3,4,5,6,7,8",
    max_new_tokens: Annotated[int, typer.Option(help="Answer length limit.")] = 48,
    device: Annotated[str, typer.Option(help="Device of the batched accuracy pass.")] = "auto",
    workers: Annotated[int, typer.Option(help="CPU processes of the engine sweep (0 = cores).")] = 0,
    engine_time_budget_s: Annotated[
        float, typer.Option(help="Stop the engine sweep after this many seconds (0 = none).")
    ] = 0.0,
    out: Annotated[Path, typer.Option(help="Folder for eval.md and eval.json.")] = Path("world_eval"),
) -> None:
    """Per-question-type accuracy of both models and the naive acceptance (α, τ per γ,
    per type, per position) of the eventgpt drafter; writes OUT/eval.md and OUT/eval.json."""
    import json

    from evspec.training.evaluate import EvalConfig, evaluate_world
    from evspec.training.report import to_markdown
    from evspec.training.assets import _model_dir

    try:
        cfg = EvalConfig(
            target=_model_dir(target)[0], drafter=_model_dir(drafter)[0], data=data, split=split,
            limit=limit, gammas=tuple(int(g) for g in gammas.split(",") if g.strip()),
            acceptance_per_type=acceptance_per_type, max_new_tokens=max_new_tokens,
            device=device, workers=workers, engine_time_budget_s=engine_time_budget_s or None,
        )
        summary = evaluate_world(cfg)
    except (ValueError, FileNotFoundError) as exc:
        _fail(str(exc))
        return
    out.mkdir(parents=True, exist_ok=True)
    (out / "eval.json").write_text(json.dumps(summary, indent=1) + "\n")
    report = to_markdown(summary)
    (out / "eval.md").write_text(report)
    typer.echo(report)


def pack(
    data: Annotated[Path, typer.Option(help="World folder the models were trained on.")],
    target: Annotated[Path, typer.Option(help="Target run (or checkpoint) folder.")],
    drafter: Annotated[Path, typer.Option(help="Drafter run (or checkpoint) folder.")],
    out: Annotated[Path, typer.Option(help="New asset folder (evspec/assets/world layout).")],
    clips: Annotated[int, typer.Option(help="Held-out test clips to ship (at most 10).")] = 8,
    notes: Annotated[Path | None, typer.Option(help="Markdown appended to the README.")] = None,
) -> None:
    """Export both models in fp16 with the tokenizer and a few test clips, for shipping."""
    from evspec.training.assets import pack_world_assets

    try:
        text = notes.read_text() if notes is not None else ""
        folder = pack_world_assets(data, target, drafter, out, clips=clips, notes=text)
    except (ValueError, FileNotFoundError, FileExistsError) as exc:
        _fail(str(exc))
        return
    size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    typer.echo(f"packed {folder} ({size / 1e6:.1f} MB)")


def register_into(world_app: typer.Typer) -> None:
    """Add ``train``, ``eval`` and ``pack`` to the ``world`` verb group."""
    world_app.command("train")(train)
    world_app.command("eval")(evaluate)
    world_app.command("pack")(pack)
