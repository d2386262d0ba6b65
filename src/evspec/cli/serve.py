"""``evspec serve``: the OpenAI-compatible HTTP server (``evspec.api.server``)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from evspec.cli.choices import DType, Drafter, GammaPolicy, Kernels, Quant, Schedule
from evspec.cli.errors import fail


def serve_cmd(
    target: str = typer.Option("world", help="Video-LLaVA: world (the shipped world model), a "
                               "preset (tiny-random, 7b) or a local folder."),
    draft_model: Optional[str] = typer.Option(
        None, help="EventGPT: world, a preset or a local folder (default: the target's preset)."),
    drafter: Drafter = typer.Option("event-head", help="Draft strategy."),
    drafter_path: Optional[str] = typer.Option(
        None, help="Checkpoint folder of a trained drafter (default: the shipped module)."),
    gamma: int = typer.Option(4, min=1, help="Tokens drafted per round (requests may set "
                              "\"gamma\")."),
    gamma_policy: GammaPolicy = typer.Option("fixed", help="fixed, or dynamic γ per round."),
    schedule: Schedule = typer.Option("sequential", help="sequential or pipelined."),
    max_new_tokens: int = typer.Option(64, min=1, help="Answer length when a request sets no "
                                       "max_tokens."),
    max_tokens_limit: int = typer.Option(1024, min=1, help="The largest max_tokens a request "
                                         "may ask for."),
    device: str = typer.Option("auto", help="cpu, cuda, cuda:N or auto."),
    dtype: DType = typer.Option("auto", help="auto (bf16 on GPU, fp32 on CPU) or a dtype."),
    quant: Quant = typer.Option("none", help="Weights: none, or 4bit (bitsandbytes NF4)."),
    fast: bool = typer.Option(False, help="Fast engine: static KV cache, CUDA graphs on GPU."),
    compile_engine: bool = typer.Option(False, "--compile", help="With --fast: torch.compile "
                                        "the fast engine (compiled artifacts are cached on "
                                        "disk for the next start)."),
    kernels: Kernels = typer.Option("torch", help="With --fast: torch or triton kernels."),
    threads: Optional[int] = typer.Option(None, min=1, help="CPU threads for torch (default: 1 "
                                          "on a CPU with <= 2 cores, else torch's choice)."),
    host: str = typer.Option("127.0.0.1", help="Address to listen on."),
    port: int = typer.Option(8000, min=0, max=65535, help="Port to listen on."),
    model_name: str = typer.Option("evspec", help="The model id clients name."),
    max_queue: int = typer.Option(16, min=1, help="Requests waiting or running at once; more "
                                  "get HTTP 503."),
    max_batch: int = typer.Option(1, min=1, help="Waiting requests (not streamed, same "
                                  "decoding options) answered together: one target pass per "
                                  "round verifies all their drafts (default engine only)."),
    allowed_media_dir: List[Path] = typer.Option(
        [], help="A directory whose files requests may name by path (file:// URLs); repeat "
                 "for several.  Without one, clips come as base64 data: URLs only."),
    warmup: bool = typer.Option(True, help="Answer one question on random inputs before "
                                "listening (compiles and captures graphs up front)."),
    log_level: str = typer.Option("info", help="uvicorn's log level."),
) -> None:
    """Serve chat completions (OpenAI API) answered by Video-LLaVA with speculative decoding.

    A request's last user message holds the question and the clip as content parts:
    {"type": "video_url", "video_url": {"url": ...}} and {"type": "events_url",
    "events_url": {"url": ...}}, each a file:// path under --allowed-media-dir, a base64
    data: URL, or "random".  Endpoints: /v1/chat/completions (stream: true for server-sent
    events), /v1/models, /health, /metrics.
    """
    try:
        from evspec.api.server import ServerConfig, serve
    except ModuleNotFoundError as exc:
        fail(f"evspec serve needs {exc.name}: pip install 'evspec[serve]'", code=2)
    from evspec.api.pipeline import Pipeline

    try:
        config = ServerConfig(model_name=model_name, max_queue=max_queue, max_batch=max_batch,
                              allowed_media_dirs=list(allowed_media_dir),
                              max_tokens_limit=max_tokens_limit)
        pipe = Pipeline.from_pretrained(
            target, draft_model=draft_model, drafter=drafter.value, drafter_path=drafter_path,
            gamma=gamma, gamma_policy=gamma_policy.value, schedule=schedule.value,
            max_new_tokens=max_new_tokens, device=device, dtype=dtype.value, quant=quant.value,
            fast=fast, compile=compile_engine, kernels=kernels.value, threads=threads)
    except (ValueError, FileNotFoundError, KeyError) as exc:
        fail(str(exc), code=2)
    if max_batch > 1 and not pipe.can_batch:
        fail("--max-batch > 1 needs the default engine (no --fast), --gamma-policy fixed and "
             "--schedule sequential", code=2)
    if warmup:
        pipe.warmup()
    serve(pipe, config, host=host, port=port, log_level=log_level)


def register(app: typer.Typer) -> None:
    app.command("serve")(serve_cmd)
