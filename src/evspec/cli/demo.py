"""``evspec demo``: the README's main command."""

from __future__ import annotations

import typer


def demo_cmd(
    drafter: str = typer.Option(
        "auto", help="Drafter to demonstrate; auto = event-router (event-head, or target-head for "
        "colour questions) when the trained heads are shipped beside the world checkpoints, "
        "else eventgpt."),
    gamma: int = typer.Option(4, help="Tokens drafted per round."),
    max_new_tokens: int = typer.Option(32, help="Answer length limit."),
    limit: int = typer.Option(6, help="Number of sample questions."),
    rounds: bool = typer.Option(True, help="Show the accepted tokens round by round."),
    cache_clips: bool = typer.Option(
        True, help="Encode each clip (video prefix, event memory) once, untimed, and reuse it for "
        "its questions in both runs; --no-cache-clips times the encoding in every question."),
) -> None:
    """Answer sample questions target-only and with speculative decoding; show that the
    tokens are identical, which drafts were accepted, α, τ and the times."""
    from evspec import demo

    threads = demo.set_cpu_threads()
    if demo.world_available():
        from evspec.demo import load_world_cases, load_world_models  # shipped checkpoints

        target, drafter_model = load_world_models()
        cases = load_world_cases(target, drafter_model, limit=limit)
        typer.echo("evspec demo: shipped world checkpoints on held-out sample clips\n")
    else:
        from evspec.loading import ModelSpec, load_models

        loaded = load_models(ModelSpec(target="tiny-random", draft_model="tiny-random",
                                       device="cpu", dtype="float32", seed=0))
        target, drafter_model = loaded.target, loaded.draft
        cases = demo.tiny_cases(target, drafter_model, n=min(limit, 3))
        typer.echo(
            "evspec demo: world checkpoints not shipped yet -> tiny-random presets on random clips\n"
            "(answers are gibberish from random weights; losslessness and statistics are real)\n"
        )

    def show(row: demo.DemoRow) -> None:
        b, s = row.baseline, row.speculative
        typer.echo(f"Q: {row.case.request.question}")
        typer.echo(f"A: {b.text.strip()!r}")
        if row.case.reference is not None:
            typer.echo(f"   reference: {row.case.reference!r}")
        typer.echo(f"   drafting changed nothing: {'yes' if row.identical else 'NO — tokens differ!'}"
                   f" ({len(b.tokens)} tokens)")
        if rounds:
            for line in demo.format_rounds(s, target):
                typer.echo(line)
        st = s.stats
        typer.echo(
            f"   {st.drafter} γ={st.gamma}: α={st.alpha:.2f} τ={st.tau:.2f} | target-only "
            f"{b.stats.total_ms:.0f} ms, speculative {st.total_ms:.0f} ms "
            f"({b.stats.total_ms / max(st.total_ms, 1e-9):.2f}×)\n"
        )

    if drafter == "auto":
        drafter = demo.default_drafter()
    import torch

    device = str(getattr(target, "device", "cpu"))
    typer.echo(f"measured: each question's wall time from request to last token, target-only and "
               f"speculative in alternating order, on {device} with {threads} intra-op thread(s)"
               + ("; each clip's video prefix and event memory encoded once beforehand (untimed, "
                  "for both runs)" if cache_clips else "; every question encodes its clip") + "\n")
    rows = demo.run_demo(target, drafter_model, cases, drafter=drafter, gamma=gamma,
                         max_new_tokens=max_new_tokens, on_row=show, cache_clips=cache_clips)
    same = sum(r.identical for r in rows)
    base_ms = sum(r.baseline.stats.total_ms for r in rows)
    spec_ms = sum(r.speculative.stats.total_ms for r in rows)
    base_first = sum(r.baseline.stats.ttft_ms for r in rows)
    spec_first = sum(r.speculative.stats.ttft_ms for r in rows)
    tokens = sum(len(r.baseline.tokens) for r in rows)
    typer.echo(f"{same}/{len(rows)} answers identical with and without drafting; all {len(rows)} "
               f"answers ({tokens} tokens): target-only {base_ms:.0f} ms, speculative ({drafter}, "
               f"γ={gamma}) {spec_ms:.0f} ms ({base_ms / max(spec_ms, 1e-9):.2f}×, this machine, "
               f"torch {torch.__version__}); of which to the first token {base_first:.0f} / "
               f"{spec_first:.0f} ms.")
    if same != len(rows):
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("demo")(demo_cmd)
