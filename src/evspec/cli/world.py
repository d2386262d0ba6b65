"""``evspec world ...``: the synthetic world (WORLD.md).

Thin wrappers; ``generate`` is a function in ``evspec.data.world``; ``train``, ``eval`` and
``pack`` (functions in ``evspec.training``) come from :mod:`evspec.cli.world_train`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from evspec.cli.errors import fail

world_app = typer.Typer(
    name="world",
    help="The synthetic world: scenes rendered to video and events, with questions.",
    no_args_is_help=True,
)


@world_app.command("generate")
def generate(
    out: Annotated[Path, typer.Option(help="Output folder (manifest.json, clips/, tokenizer/).")],
    clips: Annotated[int, typer.Option(help="Number of clips to generate.")] = 1000,
    seed: Annotated[int, typer.Option(help="Seed; clip i depends only on (seed, i).")] = 0,
    workers: Annotated[
        int, typer.Option(help="Worker processes (default: all CPU cores).")
    ] = os.cpu_count() or 1,
    resolution: Annotated[int, typer.Option(help="Frame and sensor size in pixels (square).")] = 64,
    render_hz: Annotated[int, typer.Option(help="Internal render rate events come from.")] = 200,
    fps: Annotated[int, typer.Option(help="Video frame rate (must divide --render-hz).")] = 20,
    contrast_threshold: Annotated[float, typer.Option(help="Event threshold C (log units).")] = 0.2,
    noise_hz: Annotated[float, typer.Option(help="Noise events per pixel per second.")] = 0.02,
    video_format: Annotated[str, typer.Option(help="png (lossless frame folders) or mp4.")] = "png",
    overwrite: Annotated[bool, typer.Option(help="Replace a world already in --out.")] = False,
    tokenizer: Annotated[bool, typer.Option(help="Also write the world tokenizer pair.")] = True,
) -> None:
    """Generate CLIPS synthetic clips (RGB video + simulated events + QAs) into OUT.

    Writes one manifest with train/val/test splits, per-split sidecars (drafter-style
    answers, structured fields, scene specs) and the world tokenizer.
    """
    from evspec.data.world.config import WorldConfig
    from evspec.data.world.generate import generate_world
    from evspec.data.world.scene import SceneConfig
    from evspec.data.world.simulate import EventConfig

    try:
        cfg = WorldConfig(
            scene=SceneConfig(resolution=resolution),
            events=EventConfig(contrast_threshold=contrast_threshold, noise_hz=noise_hz),
            render_hz=render_hz,
            video_fps=fps,
            video_format=video_format,
        )
        report = generate_world(
            out, clips, seed, cfg, workers=workers, overwrite=overwrite, tokenizer=tokenizer
        )
    except (ValueError, FileExistsError) as exc:
        fail(str(exc))
        return
    splits = ", ".join(f"{k} {v}" for k, v in report.split_counts.items())
    typer.echo(
        f"wrote {report.clips} clips ({splits}), {report.questions} questions, "
        f"{report.events} events to {report.manifest} in {report.seconds:.1f} s "
        f"({report.clips_per_s:.1f} clips/s, {workers} worker(s))"
    )


def register(app: typer.Typer) -> None:
    """Add the ``world`` verb group to the ``evspec`` command."""
    from evspec.cli.world_train import register_into

    register_into(world_app)
    app.add_typer(world_app, name="world")
