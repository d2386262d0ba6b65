"""``evspec generate``: answer one question about one clip, optionally with a drafter."""

from __future__ import annotations

import json
import sys
from typing import Optional

import typer

from evspec.decoding.names import DRAFTER_NAMES, needs_draft_model


def generate_cmd(
    question: str = typer.Option(..., "--question", "-q", help="The question about the clip."),
    video: Optional[str] = typer.Option(
        None, help="Video: an mp4, a folder of frames, or 'random' (random frames)."),
    events: Optional[str] = typer.Option(
        None, help="Events: a stream file (.npz/.npy/.h5), a folder of rendered event images, or 'random'."),
    drafter: str = typer.Option("none", help=f"Draft strategy: {', '.join(DRAFTER_NAMES)}."),
    drafter_path: Optional[str] = typer.Option(
        None, help="Checkpoint folder of a trained drafter (eventgpt-adapter, eventgpt-lora, event-head, "
                   "target-head; default: the module shipped with the world models)."),
    gamma: int = typer.Option(4, help="Tokens drafted per round (γ ≥ 1); the most per round with --gamma-policy dynamic."),
    gamma_policy: str = typer.Option(
        "fixed", help="fixed (γ every round), or dynamic: γ each round from the running acceptance and the "
                      "measured draft cost, 0 (no drafting) when drafting would not pay (docs/beyond.md)."),
    temperature: float = typer.Option(0.0, help="0 = greedy; > 0 samples (lossless rejection sampling)."),
    top_p: float = typer.Option(1.0, help="Nucleus filtering for sampling."),
    seed: int = typer.Option(0, help="Sampling seed (and the random-weight presets' seed)."),
    max_new_tokens: int = typer.Option(64, help="Answer length limit."),
    target: str = typer.Option("tiny-random", help="Video-LLaVA: a preset (tiny-random, 7b) or a local folder."),
    draft_model: str = typer.Option("tiny-random", help="EventGPT: a preset (tiny-random, 7b) or a local folder."),
    window_ms: Optional[float] = typer.Option(None, help="Use only the first WINDOW_MS of the event stream."),
    device: str = typer.Option("auto", help="cpu, cuda, cuda:N or auto."),
    target_device: Optional[str] = typer.Option(None, help="Device of Video-LLaVA (default: --device), e.g. cuda:0."),
    draft_device: Optional[str] = typer.Option(None, help="Device of EventGPT (default: --device), e.g. cuda:1."),
    schedule: str = typer.Option(
        "sequential", help="sequential, or pipelined (the drafter drafts the next block while the target scores)."),
    quant: str = typer.Option("none", help="Weights: none, or 4bit (bitsandbytes NF4; needs CUDA)."),
    dtype: str = typer.Option("auto", help="auto (bf16 on GPU, fp32 on CPU), float32, bfloat16, float16."),
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
    kernels: str = typer.Option(
        "torch", help="With --fast: torch, or triton (on CUDA: decode and score steps as four "
                      "row-invariant Triton kernels a layer; fastest 7B decode, "
                      "docs/fast_engine.md)."),
    ignore_eos: bool = typer.Option(False, help="Generate exactly MAX_NEW_TOKENS (timing random-weight presets)."),
    as_json: bool = typer.Option(
        False, "--json", help="Print one JSON object (tokens, text, stats, and numerics: the "
                              "target's dtype, engine and whether it is exact)."),
) -> None:
    """Answer QUESTION about a clip with Video-LLaVA, drafting with the chosen drafter.

    The answer is identical whatever the drafter and schedule (greedy); only the speed
    changes.  ``--schedule pipelined`` with ``--draft-device`` on a second GPU drafts the
    next block while the target scores the current one (docs/two_gpu.md).
    """
    from evspec.bench.config import SCHEDULES
    from evspec.decoding.drafters import make_drafter
    from evspec.decoding.gamma import DynamicGamma
    from evspec.models.fast.config import check_fast_options
    from evspec.session import QUANT_CHOICES, is_world_model, load_eventgpt, load_inputs, load_target, make_request, resolve_device, resolve_dtype

    if schedule == "pipelined":
        from evspec.decoding.pipeline import generate_pipelined as generate
    else:
        from evspec.decoding.engine import generate

    try:
        if schedule not in SCHEDULES:
            raise ValueError(f"--schedule must be one of {', '.join(SCHEDULES)}, got {schedule!r}")
        if quant not in QUANT_CHOICES:
            raise ValueError(f"--quant must be one of {', '.join(QUANT_CHOICES)}, got {quant!r}")
        if gamma_policy not in ("fixed", "dynamic"):
            raise ValueError(f"--gamma-policy must be fixed or dynamic, got {gamma_policy!r}")
        if gamma_policy == "dynamic" and schedule == "pipelined":
            raise ValueError("--gamma-policy dynamic runs with --schedule sequential (the pipelined "
                             "schedule drafts a fixed γ ahead)")
        if gamma < 1:
            raise ValueError(f"--gamma must be >= 1, got {gamma}")
        if fast is None:  # the fast engine wherever it runs (it refuses 4-bit weights)
            fast = quant != "4bit"
        check_fast_options(fast, compile_engine, kernels)
        options = {}
        if drafter_path is not None:
            from evspec.decoding.drafters import UNTRAINED, checkpoint_option

            if drafter_path == UNTRAINED:
                raise ValueError("--drafter-path untrained drafts noise; it is for the acceptance-controlled "
                                 "bench only (evspec bench --controlled-alpha)")
            options[checkpoint_option(drafter)] = drafter_path
        dev = resolve_device(target_device or device)
        draft_dev = resolve_device(draft_device or device)
        dt = resolve_dtype(dtype, dev)
        tgt = load_target(target, device=dev, dtype=dt, seed=seed, quant=quant)
        dm = None
        if needs_draft_model(drafter):
            dm = load_eventgpt(draft_model, device=draft_dev, dtype=dt, seed=seed + 1, quant=quant)
        inputs = load_inputs(
            video if video is not None else "random",
            events if events is not None else ("random" if dm is not None else None),
            num_frames=tgt.num_frames,
            n_event_images=dm.config.n_event_images if dm is not None else 5,
            image_size=tgt.config.vision_config.image_size,
            event_image_size=dm.config.image_size if dm is not None else 336,
            window_ms=window_ms,
            seed=seed,
            world=dm is not None and is_world_model(dm),
        )
        if fast:
            for model in (tgt, dm):
                if model is not None:
                    # the target compiles its score of γ + 1 as it is (not padded to a power of two)
                    sizes = (gamma + 1,) if model is tgt and drafter != "none" else ()
                    model.enable_fast(compile=compile_engine, kernels=kernels, score_sizes=sizes)
        request = make_request(question, inputs)
        drafter_obj = make_drafter(drafter, target=tgt, draft_model=dm, **options)
    except (ValueError, FileNotFoundError, KeyError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2)

    streamed: list[int] = []

    def stream(new: list[int]) -> None:
        before = tgt.decode_text(streamed)
        streamed.extend(new)
        sys.stdout.write(tgt.decode_text(streamed)[len(before):])
        sys.stdout.flush()

    if not as_json:
        typer.echo(f"Q: {question}")
        sys.stdout.write("A: ")
    policy = {}
    if gamma_policy == "dynamic" and drafter_obj is not None:
        policy = {"gamma_policy": DynamicGamma(c=0.3, max_gamma=gamma, min_gamma=0, measure_c=True)}
    try:
        result = generate(tgt, request, drafter_obj, gamma=gamma, max_new_tokens=max_new_tokens,
                          temperature=temperature, top_p=top_p, seed=seed,
                          on_token=None if as_json else stream, stop_at_eos=not ignore_eos, **policy)
    except ValueError as exc:
        typer.echo(f"\nerror: {exc}", err=True)
        raise typer.Exit(2)
    if as_json:
        typer.echo(json.dumps({**result.to_dict(), "numerics": tgt.numerics}))
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


def register(app: typer.Typer) -> None:
    app.command("generate")(generate_cmd)
