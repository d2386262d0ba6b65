"""``evspec bench`` and ``evspec report``: thin wrappers over ``evspec.bench``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer


def _fail(message: str, code: int = 1) -> None:
    typer.echo(message, err=True)
    raise typer.Exit(code=code)


def _names(text: str, what: str) -> tuple[str, ...]:
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    if not names:
        _fail(f"--{what} is empty; give a comma-separated list")
    return names


def _ints(text: str, what: str) -> tuple[int, ...]:
    try:
        return tuple(int(n) for n in _names(text, what))
    except ValueError:
        _fail(f"--{what} must be comma-separated integers such as 1,2,4,8; got {text!r}")
        raise  # unreachable: _fail exits


def bench(
    dataset: Annotated[
        str, typer.Option(help="Manifest JSON, or random:N for N random-frame requests.")
    ],
    out: Annotated[Path, typer.Option(help="Run folder (records.jsonl, run.json, report); reused to resume.")],
    drafters: Annotated[
        str, typer.Option(help="Comma-separated drafters; 'none' is the target-only baseline.")
    ] = "none,prompt-lookup",
    gamma: Annotated[str, typer.Option(help="Comma-separated draft lengths γ, e.g. 1,2,4,8.")] = "4",
    temperature: Annotated[float, typer.Option(help="0 = greedy (lossless check is exact).")] = 0.0,
    top_p: Annotated[float, typer.Option(help="Nucleus sampling mass when temperature > 0.")] = 1.0,
    max_new_tokens: Annotated[int, typer.Option(help="Answer length cap.")] = 128,
    limit: Annotated[int | None, typer.Option(help="Only the first N requests.")] = None,
    split: Annotated[str, typer.Option(help="Manifest split to use (train, val, test, or all).")] = "test",
    target: Annotated[
        str, typer.Option(help="Video-LLaVA preset (tiny-random, 7b) or checkpoint folder.")
    ] = "tiny-random",
    draft_model: Annotated[
        str | None,
        typer.Option(help="EventGPT preset or release folder (default: the target's preset)."),
    ] = None,
    dtype: Annotated[str, typer.Option(help="auto, float32, bfloat16 or float16.")] = "auto",
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    controlled_alpha: Annotated[
        float | None,
        typer.Option(help="Acceptance-controlled mode: drafts right with this probability."),
    ] = None,
    warmup: Annotated[int, typer.Option(help="Untimed warm-up requests per configuration.")] = 1,
    hf_baseline: Annotated[bool, typer.Option(help="Also time transformers generate.")] = True,
    hf_cache: Annotated[
        str | None,
        typer.Option(help="cache_implementation of the HF baseline (default dynamic; 'static')."),
    ] = None,
    retry_failed: Annotated[bool, typer.Option(help="Re-run measurements recorded as failed.")] = False,
    seed: Annotated[int, typer.Option(help="Sampling seed and random-weight seed.")] = 0,
    report: Annotated[bool, typer.Option(help="Write report.md (and plots) at the end.")] = True,
) -> None:
    """Time every (request, drafter, γ) plus the baselines; one JSON line per measurement.

    Rerunning the same command resumes: finished measurements are kept, nothing is
    repeated.  Ctrl-C stops cleanly after the last finished measurement.
    """
    from evspec.bench.config import BenchConfig
    from evspec.bench.run import ModelSpec
    from evspec.bench.run import bench as run

    try:
        config = BenchConfig(
            drafters=_names(drafters, "drafters"),
            gammas=_ints(gamma, "gamma"),
            temperature=temperature,
            top_p=top_p,
            max_new_tokens=max_new_tokens,
            seed=seed,
            warmup=warmup,
            hf_baseline=hf_baseline,
            controlled_alpha=controlled_alpha,
            retry_failed=retry_failed,
            dataset=dataset,
        )
        models = ModelSpec(
            target=target, draft_model=draft_model, dtype=dtype, device=device, seed=seed, hf_cache=hf_cache
        )
        outcome = run(
            config, out, models, limit=limit, split=None if split == "all" else split,
            report=report, argv=["evspec", *sys.argv[1:]],
        )
    except (ValueError, FileNotFoundError, ImportError) as exc:
        _fail(f"bench: {exc}")
        return
    summary = (
        f"{outcome.written} measurements written ({outcome.failed} failed), "
        f"{outcome.skipped} already done, in {out}"
    )
    if outcome.interrupted:
        _fail(f"interrupted: {summary}; run the same command again to resume", code=130)
    typer.echo(summary)
    if report:
        typer.echo(f"report: {out / 'report.md'}")


def report(
    run_dir: Annotated[Path, typer.Argument(help="A run folder written by `evspec bench`.")],
    plots: Annotated[bool, typer.Option(help="Draw the plots (needs matplotlib).")] = True,
) -> None:
    """Write report.md (tables: speedups measured and predicted, α, τ, c, stage times),
    summary.json and plots into RUN_DIR."""
    from evspec.bench.report import build_report

    try:
        path = build_report(run_dir, plots=plots)
    except (ValueError, FileNotFoundError, ImportError) as exc:
        _fail(f"report: {exc}")
        return
    typer.echo(f"wrote {path}")


def register(app: typer.Typer) -> None:
    """Add the top-level ``bench`` and ``report`` verbs."""
    app.command("bench")(bench)
    app.command("report")(report)
