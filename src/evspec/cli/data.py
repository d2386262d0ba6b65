"""``evspec data ...``: check manifests, build DSEC clips, import research data, render events.

Thin wrappers; each verb is a function in ``evspec.data``.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Annotated

import typer

from evspec.cli.errors import fail

data_app = typer.Typer(
    name="data",
    help="Datasets: check manifests, build DSEC clips, import EventGPT data, render events.",
    no_args_is_help=True,
)


@data_app.command("check")
def check(
    manifest: Annotated[Path, typer.Argument(help="Manifest JSON to validate.")],
    num_frames: Annotated[int, typer.Option(help="Video frames each clip must provide.")] = 8,
    n_event_images: Annotated[int, typer.Option(help="Event images each window must allow.")] = 5,
) -> None:
    """Validate every entry of MANIFEST and its files; list all problems (file: field: reason).

    Exits with status 1 when there is any problem.
    """
    from evspec.data.manifest import check_manifest

    problems = check_manifest(
        manifest, num_frames=num_frames, n_event_images=n_event_images, progress=True
    )
    for p in problems:
        typer.echo(str(p))
    if problems:
        fail(f"{len(problems)} problem(s) in {manifest}")
    typer.echo(f"OK: {manifest}")


@data_app.command("dsec")
def dsec(
    root: Annotated[Path, typer.Option(help="DSEC split folder (one folder per sequence).")],
    out: Annotated[Path, typer.Option(help="Output folder (clips/ and manifest.json).")],
    duration: Annotated[str, typer.Option(help="Clip length: 50ms, 500ms, 1s, ...")] = "1s",
    overlap: Annotated[
        float, typer.Option(help="Fraction shared by consecutive clips, in [0, 1).")
    ] = 0.5,
    questions: Annotated[
        str, typer.Option(help="Question set name (dsec-top10) or a .json/.txt file.")
    ] = "dsec-top10",
    split: Annotated[str, typer.Option(help="Split in the manifest: train, val or test.")] = "test",
    fps: Annotated[int, typer.Option(help="Frame rate of the mp4 (DSEC images: 20 Hz).")] = 20,
    sequence: Annotated[
        list[str] | None, typer.Option(help="Only this sequence (repeatable).")
    ] = None,
    min_events: Annotated[int, typer.Option(help="Skip windows with fewer events.")] = 5,
    min_frames: Annotated[int, typer.Option(help="Skip windows with fewer images.")] = 8,
    lossless: Annotated[bool, typer.Option(help="Lossless RGB H.264 instead of yuv420p.")] = False,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Cut DSEC sequences into fixed-duration clips (events + 20 fps mp4) and a manifest.

    Resumable: rerun the same command to finish an interrupted build.
    """
    from evspec.data.dsec import DsecBuildConfig, build_dsec_clips, load_question_set
    from evspec.data.errors import DataError
    from evspec.data.windows import WindowLengthWarning, check_window_length, parse_duration

    try:
        duration_us = parse_duration(duration)
        qname, qs = load_question_set(questions)
        cfg = DsecBuildConfig(
            duration_us=duration_us, overlap=overlap, fps=fps, split=split, questions=qs,
            question_set=qname, min_events=min_events, min_frames=min_frames, lossless=lossless,
            sequences=tuple(sequence) if sequence else None,
        )
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", WindowLengthWarning)
            check_window_length(duration_us, str(root))
        for w in caught:
            typer.echo(f"warning: {w.message}", err=True)
        report = build_dsec_clips(root, out, cfg, progress=progress)
    except (DataError, ValueError) as exc:
        fail(str(exc))
        return
    summary = (
        f"{report.written} clip(s) written, {report.reused} reused, "
        f"{report.skipped_empty} empty and {report.skipped_few_frames} short window(s) skipped; "
        f"manifest: {report.manifest}"
    )
    if report.written + report.reused == 0:  # an empty manifest is no dataset
        frames = duration_us * fps // 1_000_000
        hint = ""
        if report.skipped_few_frames:
            hint = (f"; a {duration} window holds about {frames} image(s) at {fps} fps and "
                    f"--min-frames is {min_frames}: use a longer --duration or a lower --min-frames")
        fail(f"no clips: {summary}{hint}")
    typer.echo(summary)


@data_app.command("import-eventgpt")
def import_eventgpt_cmd(
    json_file: Annotated[Path, typer.Argument(help="EventGPT_Instruction_Subset.json")],
    root: Annotated[Path, typer.Option(help="Research dataset folder (event_npy/, mp4/, ...).")],
    out: Annotated[Path, typer.Option(help="Manifest JSON to write.")],
    split: Annotated[str, typer.Option(help="Split for every clip: train, val or test.")] = "train",
    video: Annotated[
        str, typer.Option(help="Prefer 'mp4' (mp4_data) or 'frames' (video_data).")
    ] = "mp4",
) -> None:
    """Convert the research's instruction JSON into an evspec manifest."""
    from evspec.data.errors import DataError
    from evspec.data.eventgpt_import import import_eventgpt

    try:
        manifest = import_eventgpt(json_file, root, out, split=split, video=video)
    except (DataError, ValueError) as exc:
        fail(str(exc))
        return
    n_q = sum(len(c.questions) for c in manifest.clips)
    typer.echo(f"{len(manifest.clips)} clip(s), {n_q} question(s) -> {out}")


@data_app.command("render")
def render(
    events: Annotated[Path, typer.Argument(help="Events file (.npz, research .npy, DSEC .h5).")],
    out: Annotated[Path, typer.Option(help="Folder for the PNGs.")],
    n: Annotated[int, typer.Option(help="Number of equal-count event images.")] = 5,
    t0_us: Annotated[int | None, typer.Option(help="Window start, absolute µs.")] = None,
    t1_us: Annotated[int | None, typer.Option(help="Window end (exclusive), absolute µs.")] = None,
    canvas: Annotated[
        str,
        typer.Option(
            help="'chunk' (the EventGPT release: each image sized from its own events), "
            "'data' (one canvas sized from all events) or 'sensor'."
        ),
    ] = "chunk",
    polarity: Annotated[
        str,
        typer.Option(
            help="The file's polarity values: binary (0/1 only), release (0 -> blue, any "
            "other value -> red, as the EventGPT release paints) or signed (-1 -> blue, "
            "+1 -> red)."
        ),
    ] = "binary",
    overwrite: Annotated[bool, typer.Option(
        help="Replace images of the same name already in OUT (another clip's, say).")] = False,
) -> None:
    """Render EventGPT's event images of EVENTS to PNG files."""
    from evspec.data.errors import DataError
    from evspec.data.images import write_event_pngs

    if (t0_us is None) != (t1_us is None):
        fail("give both --t0-us and --t1-us, or neither")
    window = (t0_us, t1_us) if t0_us is not None and t1_us is not None else None
    try:
        paths = write_event_pngs(
            events, out, n, window_us=window, canvas=canvas,  # type: ignore[arg-type]
            polarity=polarity,
            overwrite=overwrite,
        )
    except (DataError, ValueError, FileExistsError) as exc:
        fail(str(exc))
        return
    typer.echo(f"{len(paths)} image(s) in {out}")


def register(app: typer.Typer) -> None:
    """Add the ``data`` verb group to the top-level app."""
    app.add_typer(data_app, name="data")
