"""``evspec bench`` and ``evspec report``: thin wrappers over ``evspec.bench``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from evspec.cli.errors import fail


def _names(text: str, what: str) -> tuple[str, ...]:
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    if not names:
        fail(f"--{what} is empty; give a comma-separated list")
    return names


def _ints(text: str, what: str) -> tuple[int, ...]:
    try:
        return tuple(int(n) for n in _names(text, what))
    except ValueError:
        fail(f"--{what} must be comma-separated integers such as 1,2,4,8; got {text!r}")


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
    max_new_tokens: Annotated[int, typer.Option(help="Answer length cap.")] = 64,
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
    target_device: Annotated[
        str | None, typer.Option(help="Device of the target (default: --device), e.g. cuda:0.")
    ] = None,
    draft_device: Annotated[
        str | None, typer.Option(help="Device of the draft model (default: --device), e.g. cuda:1.")
    ] = None,
    schedule: Annotated[
        str,
        typer.Option(help="sequential, or pipelined (drafts the next block while the target scores)."),
    ] = "sequential",
    controlled_alpha: Annotated[
        float | None,
        typer.Option(help="Acceptance-controlled mode: drafts right with this probability."),
    ] = None,
    replay: Annotated[
        Path | None,
        typer.Option(help="Acceptance-replayed mode: an `evspec trace` file; each drafter's rounds "
                          "are accepted as recorded there (greedy; e.g. world traces at 7b "
                          "shapes)."),
    ] = None,
    order: Annotated[str, typer.Option(
        help="Order of a request's configurations: rotate (request i starts at configuration i) "
             "or random (seeded per request); recorded in every record.")] = "rotate",
    cache: Annotated[str, typer.Option(
        help="warm: an untimed pass of every configuration on each clip's first request, so "
             "every timed run finds the clip cached; cold: caches cleared before every timed "
             "run.")] = "warm",
    repeats: Annotated[int, typer.Option(
        help="Timed runs per configuration and request (order re-rotated each time); the "
             "record keeps the lower-median run.")] = 1,
    warmup: Annotated[int, typer.Option(help="Untimed warm-up requests per configuration.")] = 1,
    hf_baseline: Annotated[bool, typer.Option(help="Also time the transformers baselines.")] = True,
    hf_baselines: Annotated[str, typer.Option(
        help="Comma-separated transformers baselines: eager (default cache), static (static "
             "cache, compiled by transformers on CUDA), prompt-lookup (assisted generation)."
    )] = "eager",
    hf_cache: Annotated[
        str | None,
        typer.Option(help="cache_implementation of the HF baseline (default dynamic; 'static')."),
    ] = None,
    drafter_path: Annotated[
        list[str] | None,
        typer.Option(help="NAME=FOLDER: the checkpoint of a trained drafter in --drafters (repeatable; "
                          "default: the modules shipped with the world models); NAME=untrained for a "
                          "random head of the right shapes, with --controlled-alpha only."),
    ] = None,
    fast: Annotated[bool, typer.Option(help="evspec's fast engine (static KV cache; CUDA graphs on GPU).")] = False,
    compile_engine: Annotated[bool, typer.Option("--compile", help="With --fast: torch.compile the fast engine's "
                                          "layers (compiled before the timed runs).")] = False,
    kernels: Annotated[str, typer.Option(
        help="With --fast: torch, or triton (decode and score steps as four row-invariant "
             "Triton kernels a layer on CUDA; docs/fast_engine.md).")] = "torch",
    prefix_cache: Annotated[bool, typer.Option(help="Reuse each clip's prefix KV across its questions.")] = False,
    retry_failed: Annotated[bool, typer.Option(help="Re-run measurements recorded as failed.")] = False,
    seed: Annotated[int, typer.Option(help="Sampling seed and random-weight seed.")] = 0,
    report: Annotated[bool, typer.Option(help="Write report.md (and plots) at the end.")] = True,
    num_chunks: Annotated[
        int | None,
        typer.Option(help="Split the requests into N chunks (with --chunk-idx; e.g. a SLURM array)."),
    ] = None,
    chunk_idx: Annotated[int | None, typer.Option(help="This process's chunk, 0..N-1.")] = None,
) -> None:
    """Time every (request, drafter, γ) plus the baselines; one JSON line per measurement.

    Rerunning the same command resumes: finished measurements are kept, nothing is
    repeated.  Ctrl-C stops cleanly after the last finished measurement.  Under torchrun
    (RANK, WORLD_SIZE, LOCAL_RANK) or with --num-chunks/--chunk-idx each process measures
    its shard into OUT/shard-IIIII-of-NNNNN; `evspec merge OUT` then combines them.
    """
    from evspec.bench.config import BenchConfig
    from evspec.bench.run import bench as run
    from evspec.loading import ModelSpec
    from evspec.bench.shard import shard_from_env_or_args

    try:
        shard = shard_from_env_or_args(num_chunks, chunk_idx)
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
            replay=None if replay is None else str(replay),
            order=order,
            cache=cache,
            repeats=repeats,
            hf_baselines=_names(hf_baselines, "hf-baselines"),
            retry_failed=retry_failed,
            dataset=dataset,
            schedule=schedule,
        )
        models = ModelSpec(
            target=target, draft_model=draft_model, dtype=dtype, device=device, seed=seed,
            fast=fast, compile=compile_engine, kernels=kernels, prefix_cache=prefix_cache,
            target_device=target_device, draft_device=draft_device,
        )
        outcome = run(
            config, out, models, limit=limit, split=None if split == "all" else split,
            report=report, argv=["evspec", *sys.argv[1:]], shard=shard, hf_cache=hf_cache,
            drafter_paths=_pairs(drafter_path or [], "drafter-path"),
        )
    except (ValueError, FileNotFoundError, ImportError) as exc:
        fail(str(exc))
        return
    summary = (
        f"{outcome.written} measurements written ({outcome.failed} failed), "
        f"{outcome.skipped} already done, in {outcome.run_dir}"
    )
    if shard.sharded:
        summary = f"shard {shard.index} of {shard.count}: {summary}"
    if outcome.interrupted:
        fail(f"interrupted: {summary}; run the same command again to resume", code=130)
    typer.echo(summary)
    if shard.sharded:
        typer.echo(f"when every shard is done: evspec merge {out}")
    elif report:
        typer.echo(f"report: {out / 'report.md'}")


def _pairs(values: list[str], option: str) -> tuple[tuple[str, str], ...]:
    """``NAME=VALUE`` strings -> pairs (clear errors for anything else)."""
    out = []
    for v in values:
        name, sep, value = v.partition("=")
        if not sep or not name.strip() or not value.strip():
            raise typer.BadParameter(f"--{option} {v!r}: use NAME=VALUE, e.g. event-head=runs/head/best")
        out.append((name.strip(), value.strip()))
    return tuple(out)


def report(
    run_dir: Annotated[
        Path | None,
        typer.Argument(help="A run folder written by `evspec bench` (not with --results)."),
    ] = None,
    plots: Annotated[bool, typer.Option(help="Draw the plots (needs matplotlib).")] = True,
    allow_mixed: Annotated[bool, typer.Option(
        help="Report records of different commits or hardware together (marked mixed).")] = False,
    results: Annotated[Path | None, typer.Option(
        help="Regenerate the results page instead: DIR/RESULTS.md and the README's results table "
             "from DIR/headlines.json and the summaries it names (e.g. --results benchmarks/)."
    )] = None,
    readme: Annotated[Path | None, typer.Option(
        help="With --results: the README to update (default: the one beside DIR).")] = None,
    csv: Annotated[bool, typer.Option(
        "--csv", help="Also write records.csv: one row per record, one column per field "
                      "(timings.* per stage).")] = False,
) -> None:
    """Write report.md (tables: speedups measured and predicted, α, τ, c, stage times),
    summary.json and plots into RUN_DIR; or, with --results DIR, regenerate the results page."""
    if results is not None:
        from evspec.bench.results import write_results

        if run_dir is not None:
            fail("report: give a RUN_DIR or --results DIR, not both")
        try:
            written = write_results(results, readme)
        except (ValueError, FileNotFoundError) as exc:
            fail(f"report: {exc}")
            return
        typer.echo("wrote " + " and ".join(map(str, written)))
        return
    if run_dir is None:
        fail("report: give a RUN_DIR (a folder written by `evspec bench`) or --results DIR")
        return
    from evspec.bench.report import build_report

    try:
        path = build_report(run_dir, plots=plots, allow_mixed=allow_mixed)
        if csv:
            from evspec.bench.export import write_records_csv
            from evspec.bench.records import read_records

            typer.echo(f"wrote {write_records_csv(read_records(run_dir), run_dir / 'records.csv')}")
    except (ValueError, FileNotFoundError, ImportError) as exc:
        fail(str(exc))
        return
    typer.echo(f"wrote {path}")


def trace(
    run_dir: Annotated[
        Path, typer.Argument(help="A measured run folder written by `evspec bench`.")
    ],
    out: Annotated[Path, typer.Option(help="The acceptance-trace JSON file to write.")],
    source: Annotated[str, typer.Option(
        help="What the run measured, printed on every replayed report, e.g. 'world checkpoints, "
             "56 held-out questions, CPU float32'.")],
) -> None:
    """Write the acceptance trace of RUN_DIR: every drafter's (drafted, accepted) per round,
    per γ and request, which `evspec bench --replay FILE` plays back on other models
    (e.g. the 7b preset): the acceptance-replayed mode."""
    from evspec.bench.replay import write_traces

    try:
        path = write_traces(run_dir, out, source)
    except (ValueError, FileNotFoundError) as exc:
        fail(f"trace: {exc}")
        return
    typer.echo(f"wrote {path}")


def merge(
    run_dir: Annotated[
        Path, typer.Argument(help="Folder holding the shards (bench OUT, or a collect data folder).")
    ],
    out: Annotated[
        Path | None, typer.Option(help="Merged bench run folder (default RUN_DIR/merged).")
    ] = None,
    report: Annotated[bool, typer.Option(help="Write the merged run's report.md (bench).")] = True,
    plots: Annotated[bool, typer.Option(help="Draw the report's plots (needs matplotlib).")] = True,
) -> None:
    """Combine the shards of a split `bench` into one run folder that `evspec report`
    reads, or verify the shards of a split `collect` in place.  Refuses missing,
    unfinished, overlapping or mismatched shards, naming them."""
    from evspec.bench.merge import MergeError, merge_runs
    from evspec.bench.merge_collect import is_collect_folder, verify_collect
    from evspec.bench.shard import shard_dirs

    try:
        if not shard_dirs(run_dir) and is_collect_folder(run_dir):
            if out is not None:
                fail("merge: collect shards share one data folder and are verified in place; omit --out")
            verified = verify_collect(run_dir)
            for split, n in verified.splits.items():
                typer.echo(f"{split}: {n['examples']} examples from {n['shards']} shards, all planned present")
            typer.echo(f"verified {run_dir} (merged.json)")
            return
        summary = merge_runs(run_dir, out)
        typer.echo(
            f"merged {summary.shards} shards: {summary.requests} requests, {summary.records} records "
            f"({summary.failed} failed) into {summary.out}"
        )
        if report:
            from evspec.bench.report import build_report

            path = build_report(summary.out, plots=plots and _have_matplotlib())
            typer.echo(f"report: {path}")
    except (MergeError, ValueError, FileNotFoundError) as exc:
        fail(str(exc))


def _have_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def register(app: typer.Typer) -> None:
    """Add the top-level ``bench``, ``report``, ``trace`` and ``merge`` verbs."""
    app.command("bench")(bench)
    app.command("report")(report)
    app.command("trace")(trace)
    app.command("merge")(merge)
