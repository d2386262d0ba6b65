"""``evspec generate``: answer one question about one clip (or every question of a manifest),
optionally with a drafter."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer

from evspec.cli.choices import DType, GammaPolicy, Kernels, Quant, Schedule
from evspec.cli.errors import fail
from evspec.decoding.names import DRAFTER_NAMES, needs_draft_model

#: ``--drafter auto``: the trained event head with the world models, else target-only
AUTO = "auto"


def _choose_drafter(drafter: str, target: str) -> str:
    if drafter == AUTO:
        return "event-head" if target == "world" else "none"
    if drafter.partition("@")[0] not in DRAFTER_NAMES:
        raise ValueError(f"unknown drafter {drafter!r}; choose one of {AUTO}, "
                         f"{', '.join(DRAFTER_NAMES)}")
    return drafter


def generate_cmd(
    question: Optional[str] = typer.Option(
        None, "--question", "-q", help="The question about the clip (or --manifest)."),
    video: Optional[str] = typer.Option(
        None, help="Video (required): an mp4, a folder of frames, or 'random' (random frames, "
                   "for the random-weight presets)."),
    events: Optional[str] = typer.Option(
        None, help="Events (required by drafters that read them): a stream file "
                   "(.npz/.npy/.h5), a folder of rendered event images, or 'random'."),
    drafter: str = typer.Option(
        AUTO, help=f"Draft strategy: {AUTO} (event-head with the world models, else none), "
                   f"{', '.join(DRAFTER_NAMES)}."),
    drafter_path: Optional[str] = typer.Option(
        None, help="Checkpoint folder of a trained drafter (eventgpt-adapter, eventgpt-lora, "
                   "event-head, target-head; default: the module shipped with the world models): "
                   "FOLDER, or NAME=FOLDER as in bench (NAME = --drafter)."),
    gamma: int = typer.Option(4, help="Tokens drafted per round (γ ≥ 1); the most per round with --gamma-policy dynamic."),
    gamma_policy: GammaPolicy = typer.Option(
        "fixed", help="fixed (γ every round), or dynamic: γ each round from the running acceptance and the "
                      "measured draft cost, 0 (no drafting) when drafting would not pay (docs/beyond.md)."),
    temperature: float = typer.Option(0.0, help="0 = greedy; > 0 samples (lossless rejection sampling)."),
    top_p: float = typer.Option(1.0, help="Nucleus filtering for sampling."),
    seed: int = typer.Option(0, help="Sampling seed (and the random-weight presets' seed)."),
    max_new_tokens: int = typer.Option(64, help="Answer length limit."),
    target: str = typer.Option(
        "world", help="Video-LLaVA: world (the shipped world model), a preset (tiny-random, 7b) "
                      "or a local folder."),
    draft_model: Optional[str] = typer.Option(
        None, help="EventGPT: world, a preset (tiny-random, 7b) or a local folder (default: the "
                   "target's preset; needed with a folder target)."),
    window_ms: Optional[float] = typer.Option(None, help="Use only the first WINDOW_MS of the event stream."),
    device: str = typer.Option("auto", help="cpu, cuda, cuda:N or auto."),
    target_device: Optional[str] = typer.Option(None, help="Device of Video-LLaVA (default: --device), e.g. cuda:0."),
    draft_device: Optional[str] = typer.Option(None, help="Device of EventGPT (default: --device), e.g. cuda:1."),
    schedule: Schedule = typer.Option(
        "sequential", help="sequential, or pipelined (the drafter drafts the next block while the target scores)."),
    quant: Quant = typer.Option(
        "none", help="Weights: none, or 4bit (bitsandbytes NF4; needs CUDA)."),
    dtype: DType = typer.Option(
        "auto", help="auto (bf16 on GPU, fp32 on CPU), float32, bfloat16, float16."),
    fast: Optional[bool] = typer.Option(
        None, "--fast/--no-fast",
        help="Fast engine: static KV cache, CUDA graphs on GPU (captured on first use), exact "
             "numerics (a position's logits do not depend on how many tokens a step scores, so "
             "the answer is identical with any drafter in bf16/fp16 too). Default: on, except "
             "with --quant 4bit. --no-fast runs the transformers modules, whose bf16/fp16 "
             "answers may differ between drafters on near-ties (lossless in exact arithmetic "
             "only)."),
    compile_engine: bool = typer.Option(False, "--compile", help="With --fast: torch.compile the fast engine's layers "
                                 "(CUDA: ~10 s per model at the first steps; faster decode and prefill)."),
    kernels: Kernels = typer.Option(
        "torch", help="With --fast: torch, or triton (on CUDA: decode and score steps as four "
                      "row-invariant Triton kernels a layer; fastest 7B decode with --compile, "
                      "docs/fast_engine.md)."),
    threads: Optional[int] = typer.Option(
        None, min=1, help="CPU threads for torch (default: 1 on a CPU with <= 2 cores, where "
                          "two threads slow the small models down many times; else torch's)."),
    ignore_eos: bool = typer.Option(False, help="Generate exactly MAX_NEW_TOKENS (timing random-weight presets)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object (tokens, text, stats, and "
                                 "numerics: the target's dtype, engine and whether it is exact)."),
    manifest: Optional[Path] = typer.Option(
        None, help="Answer every question of this manifest (instead of -q/--video/--events); "
                   "needs --out."),
    out: Optional[Path] = typer.Option(
        None, help="With --manifest: the JSON Lines file of answers, one record per question "
                   "(the --json object plus clip_id, index, question, qtype, reference)."),
    split: Optional[str] = typer.Option(None, help="With --manifest: only this split's clips."),
    resume: bool = typer.Option(True, help="With --manifest: continue an existing --out, "
                                "skipping the questions it holds (--no-resume refuses it)."),
    progress: bool = typer.Option(True, help="With --manifest: a progress bar (shown only on "
                                  "a terminal)."),
) -> None:
    """Answer QUESTION about a clip with Video-LLaVA, drafting with the chosen drafter.

    The answer is identical whatever the drafter and schedule (greedy); only the speed
    changes.  ``--schedule pipelined`` with ``--draft-device`` on a second GPU drafts the
    next block while the target scores the current one (docs/two_gpu.md).
    """
    try:
        drafter = _choose_drafter(drafter, target)  # before torch loads
        from evspec.decoding.sampling import validate_sampling

        validate_sampling(temperature, top_p)  # before any model loads, like the paths
        from evspec.loading import check_device

        for option, value in (("--device", device), ("--target-device", target_device),
                              ("--draft-device", draft_device)):
            if value is not None:
                check_device(value, option)
        for option, value in (("--video", video), ("--events", events)):
            if value not in (None, "random") and not Path(value).exists():
                raise FileNotFoundError(f"{option} {value}: no such file or folder")
        if drafter_path is not None and "=" in drafter_path:  # bench's NAME=FOLDER
            name, _, folder = drafter_path.partition("=")
            if name.strip() != drafter:
                raise ValueError(f"--drafter-path {drafter_path!r} names {name.strip()!r}, but "
                                 f"--drafter is {drafter!r}")
            drafter_path = folder.strip()
        if fast is None:  # the fast engine wherever it runs (it refuses 4-bit weights)
            fast = quant != Quant.four_bit
        if drafter_path is not None:
            from evspec.decoding.drafters import UNTRAINED, checkpoint_option  # torch

            if drafter_path == UNTRAINED:
                raise ValueError("--drafter-path untrained drafts noise; it is for the acceptance-controlled "
                                 "bench only (evspec bench --controlled-alpha)")
            checkpoint_option(drafter)  # a drafter that loads no module refuses a path
        if gamma < 1:
            raise ValueError(f"--gamma must be >= 1, got {gamma}")
        if gamma_policy == GammaPolicy.dynamic and schedule == Schedule.pipelined:
            raise ValueError("--gamma-policy dynamic runs with --schedule sequential (the "
                             "pipelined schedule drafts a fixed γ ahead)")
        if compile_engine and not fast:
            raise ValueError("--compile compiles the fast engine: add --fast")
        if kernels != Kernels.torch and not fast:
            raise ValueError(f"--kernels {kernels.value} runs in the fast engine: add --fast")
        if manifest is not None:
            if question is not None or video is not None or events is not None:
                raise ValueError("--manifest answers the manifest's questions about its clips; "
                                 "leave out -q, --video and --events")
            if out is None:
                raise ValueError("--manifest needs --out FILE.jsonl for the answers")
        else:
            if question is None:
                raise ValueError("give the question with -q/--question (or --manifest M.json)")
            if video is None:
                raise ValueError("--video is required: an mp4, a folder of frames, or 'random' "
                                 "for random frames")
            if events is None and needs_draft_model(drafter):
                raise ValueError(f"--drafter {drafter} reads the event recording: pass --events "
                                 "(a stream file, a folder of event images, or 'random')")
        pipe = _load(drafter, drafter_path, gamma, gamma_policy, temperature, top_p, seed,
                     max_new_tokens, target, draft_model, window_ms, device, target_device,
                     draft_device, schedule, quant, dtype, fast, compile_engine, kernels, threads)
    except (ValueError, FileNotFoundError, KeyError) as exc:
        fail(str(exc), code=2)

    if manifest is not None:
        _answer_manifest(pipe, manifest, out, split, resume, progress, not ignore_eos)
        return

    try:
        pipe.load_clip(video, events)  # read (and warn about) the inputs before the answer
        if as_json:
            result = pipe(question=question, video=video, events=events, stop_at_eos=not ignore_eos)
        else:
            typer.echo(f"Q: {question}")
            sys.stdout.write("A: ")

            shown: list[str] = []

            def stream(piece: str) -> None:
                if not shown:  # "A: " already separates: no leading space from the tokenizer
                    piece = piece.lstrip()
                if piece:
                    shown.append(piece)
                    sys.stdout.write(piece)
                    sys.stdout.flush()

            result = pipe(question=question, video=video, events=events, on_text=stream,
                          stop_at_eos=not ignore_eos)
    except (ValueError, FileNotFoundError) as exc:
        typer.echo(f"\nerror: {exc}", err=True)
        raise typer.Exit(2)
    if as_json:
        typer.echo(json.dumps({**result.to_dict(), "numerics": pipe.target.numerics}))
        return
    s = result.stats
    per_token = (s.total_ms - s.ttft_ms) / max(s.new_tokens - 1, 1)  # after the first token, wall time
    typer.echo("")
    typer.echo(
        f"[{s.drafter}, γ={s.gamma}] {s.new_tokens} tokens in {s.total_ms:.1f} ms "
        f"(TTFT {s.ttft_ms:.1f} ms, then {per_token:.2f} ms/token; {len(s.rounds)} target passes, "
        f"α={s.alpha:.2f}, τ={s.tau:.2f})"
    )
    counters = getattr(s, "pipeline_counters", None)
    if counters is not None:
        c = counters()
        typer.echo(
            f"[pipelined, target {c['target_device']}, drafter {c['draft_device']}] pre-drafts: "
            f"{c['predraft_used']} used, {c['predraft_discarded']} discarded, {c['cold_rounds']} cold rounds; "
            f"{c['predraft_ms']:.1f} ms drafting hidden behind scoring"
            + (f"; no pre-drafting: {c['fallback']}" if c["fallback"] else "")
        )


def _load(drafter, drafter_path, gamma, gamma_policy, temperature, top_p, seed, max_new_tokens,
          target, draft_model, window_ms, device, target_device, draft_device, schedule, quant,
          dtype, fast, compile_engine, kernels, threads):
    """The :class:`~evspec.Pipeline` the options describe (models on their devices)."""
    from evspec.api.pipeline import Pipeline, PipelineConfig

    config = PipelineConfig(
        target=target, draft_model=draft_model, drafter=drafter, drafter_path=drafter_path,
        gamma=gamma, gamma_policy=gamma_policy.value, schedule=schedule.value,
        max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, seed=seed,
        device=target_device or device, draft_device=draft_device or device, dtype=dtype.value,
        quant=quant.value, fast=fast, compile=compile_engine, kernels=kernels.value,
        threads=threads, window_ms=window_ms)
    return Pipeline.from_config(config)


def _answer_manifest(pipe, manifest: Path, out: Path, split: Optional[str], resume: bool,
                     progress: bool, stop_at_eos: bool) -> None:
    from tqdm import tqdm

    from evspec.api.batch import answer_manifest
    from evspec.progress import bar_disable

    bar = tqdm(desc="answers", unit="q", disable=bar_disable(progress))
    try:
        summary = answer_manifest(pipe, manifest, out, split=split, resume=resume,
                                  on_record=lambda _: bar.update(), stop_at_eos=stop_at_eos)
    except (ValueError, FileNotFoundError, FileExistsError) as exc:
        fail(str(exc), code=2)
    finally:
        bar.close()
    typer.echo(f"{summary.answered} answers written to {summary.out} ({summary.skipped} already "
               f"there, {summary.total} questions)")


def register(app: typer.Typer) -> None:
    app.command("generate")(generate_cmd)
