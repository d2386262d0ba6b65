"""``evspec serve``: an OpenAI-compatible HTTP server over a :class:`~evspec.Pipeline`.

Endpoints: ``POST /v1/chat/completions`` (streaming with ``"stream": true`` as server-sent
events), ``GET /v1/models``, ``GET /health``, ``GET /metrics`` (Prometheus text).  Requests
name their clip as content parts (:mod:`evspec.api.chat`).  One worker thread runs the
engine, one request at a time, in arrival order; at most ``max_queue`` requests wait or run
at once, later ones get HTTP 503; with ``max_batch`` > 1, waiting non-streaming requests
with the same decoding options are answered together (one target pass per round verifies
all their drafts, ``Pipeline.answer_batch``).  Every response carries the request's
decoding statistics (α, τ, times) under ``"evspec"``.  Needs the ``serve`` extra (FastAPI,
uvicorn).
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import threading
import time
import uuid
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse

from evspec.api.chat import (EVENTS_PART, VIDEO_PART, BadRequest, ChatQuestion, media_input,
                             parse_chat_request)
from evspec.api.pipeline import Pipeline
from evspec.decoding.stats import Result


@dataclass
class ServerConfig:
    """How the server admits requests."""

    model_name: str = "evspec"
    max_queue: int = 16  # requests waiting or running at once; more get 503
    max_batch: int = 1  # waiting non-streaming requests answered together (1 = one by one)
    allowed_media_dirs: list[Path] = field(default_factory=list)
    max_tokens_limit: int = 1024

    def __post_init__(self) -> None:
        if self.max_queue < 1:
            raise ValueError(f"max_queue must be >= 1, got {self.max_queue}")
        if self.max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {self.max_batch}")
        self.allowed_media_dirs = [Path(d).resolve() for d in self.allowed_media_dirs]
        for d in self.allowed_media_dirs:
            if not d.is_dir():
                raise ValueError(f"allowed media directory {d} is not a directory")


class Metrics:
    """Counters exposed at ``/metrics`` (Prometheus text format)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.counts = {"ok": 0, "bad_request": 0, "rejected": 0, "error": 0}
        self.tokens = self.drafted = self.accepted = self.rounds = 0
        self.total_ms = self.ttft_ms = 0.0
        self.queued = 0
        self.batches = self.batched = 0  # batched verifications, the requests in them

    def record(self, result: Result) -> None:
        s = result.stats
        with self.lock:
            self.counts["ok"] += 1
            self.tokens += len(result.tokens)
            self.drafted += s.drafted
            self.accepted += s.accepted
            self.rounds += len(s.rounds)
            self.total_ms += s.total_ms
            self.ttft_ms += s.ttft_ms

    def count(self, outcome: str) -> None:
        with self.lock:
            self.counts[outcome] += 1

    def text(self) -> str:
        with self.lock:
            lines = ["# TYPE evspec_requests_total counter"]
            lines += [f'evspec_requests_total{{outcome="{k}"}} {v}' for k, v in self.counts.items()]
            for name, value, kind in (
                ("evspec_queue_depth", self.queued, "gauge"),
                ("evspec_generated_tokens_total", self.tokens, "counter"),
                ("evspec_drafted_tokens_total", self.drafted, "counter"),
                ("evspec_accepted_tokens_total", self.accepted, "counter"),
                ("evspec_target_passes_total", self.rounds, "counter"),
                ("evspec_request_ms_total", round(self.total_ms, 3), "counter"),
                ("evspec_ttft_ms_total", round(self.ttft_ms, 3), "counter"),
                ("evspec_batches_total", self.batches, "counter"),
                ("evspec_batched_requests_total", self.batched, "counter"),
            ):
                lines += [f"# TYPE {name} {kind}", f"{name} {value}"]
        return "\n".join(lines) + "\n"


def _error(status: int, message: str, param: str | None = None,
           kind: str = "invalid_request_error") -> JSONResponse:
    body = {"error": {"message": message, "type": kind, "param": param, "code": status}}
    return JSONResponse(body, status_code=status)


def _clip(chat: ChatQuestion, workdir: str) -> tuple[Any, Any]:
    """The request's ``(video, events)`` as :meth:`Pipeline.load_clip` takes them."""
    return (media_input(chat.video, workdir, VIDEO_PART),
            media_input(chat.events, workdir, EVENTS_PART))


def build_app(pipe: Pipeline, config: ServerConfig | None = None) -> FastAPI:
    """The FastAPI application serving ``pipe``."""
    config = config or ServerConfig()
    if config.max_batch > 1 and not pipe.can_batch:
        raise ValueError("max_batch > 1 needs the default engine (no --fast), a fixed γ and the "
                         "sequential schedule")
    worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="evspec-engine")
    pending: deque[tuple[ChatQuestion, Future]] = deque()  # waiting for a batch
    pending_lock = threading.Lock()

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        yield
        worker.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(title="evspec", summary="Video-LLaVA with event-camera speculative decoding",
                  lifespan=lifespan)
    metrics = Metrics()
    admit = threading.Lock()
    app.state.pipeline, app.state.metrics, app.state.worker = pipe, metrics, worker

    def run_question(chat: ChatQuestion, on_text=None) -> Result:
        """On the worker thread: decode the media, answer, count."""
        with tempfile.TemporaryDirectory(prefix="evspec-serve-") as tmp:
            video, events = _clip(chat, tmp)
            return pipe(question=chat.question, video=video, events=events, on_text=on_text,
                        **chat.decode)

    def take_batch() -> list[tuple[ChatQuestion, Future]]:
        """The oldest waiting request and up to ``max_batch - 1`` later ones that ask for the
        same decoding options (the others keep their places)."""
        with pending_lock:
            if not pending:
                return []
            group = [pending.popleft()]
            others: list[tuple[ChatQuestion, Future]] = []
            while pending and len(group) < config.max_batch:
                item = pending.popleft()
                (group if item[0].decode == group[0][0].decode else others).append(item)
            pending.extendleft(reversed(others))
        return group

    def run_batch() -> None:
        """On the worker thread: answer a batch of waiting requests, each future its own
        result or error."""
        group = take_batch()
        if not group:
            return
        with tempfile.TemporaryDirectory(prefix="evspec-serve-") as tmp:
            ready = []
            for chat, future in group:
                try:
                    ready.append((chat, future, pipe.load_clip(*_clip(chat, tmp))))
                except Exception as exc:  # noqa: BLE001 - that request's error, not the batch's
                    future.set_exception(exc)
            if not ready:
                return
            try:
                results = pipe.answer_batch([(c.question, inputs) for c, _, inputs in ready],
                                            **ready[0][0].decode)
            except Exception as exc:  # noqa: BLE001 - handed to every request of the batch
                for _, future, _ in ready:
                    future.set_exception(exc)
                return
        with metrics.lock:
            metrics.batches += 1
            metrics.batched += len(ready)
        for (_, future, _), result in zip(ready, results):
            future.set_result(result)

    def usage(result: Result, question: str) -> dict[str, int]:
        prompt = int(pipe.target.build_prompt_ids(question).numel())
        return {"prompt_tokens": prompt, "completion_tokens": len(result.tokens),
                "total_tokens": prompt + len(result.tokens)}

    def finish_reason(result: Result) -> str:
        return "stop" if result.stats.stop_reason == "eos" else "length"

    @app.get("/health")
    def health() -> dict[str, Any]:
        c = pipe.config
        return {"status": "ok", "model": config.model_name, "target": c.target,
                "draft_model": c.draft_model, "drafter": c.drafter, "gamma": c.gamma,
                "queue_depth": metrics.queued, "max_queue": config.max_queue}

    @app.get("/metrics", response_class=PlainTextResponse)
    def prometheus() -> str:
        return metrics.text()

    @app.get("/v1/models")
    def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": config.model_name, "object": "model",
                                             "created": 0, "owned_by": "evspec"}]}

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        try:
            body = json.loads(await request.body())
        except (ValueError, UnicodeDecodeError):
            metrics.count("bad_request")
            return _error(400, "the request body is not valid JSON")
        try:
            chat = parse_chat_request(body, allowed_dirs=config.allowed_media_dirs,
                                      max_tokens_limit=config.max_tokens_limit)
        except BadRequest as exc:
            metrics.count("bad_request")
            return _error(400, str(exc), exc.param)
        model = body.get("model") if isinstance(body.get("model"), str) else config.model_name
        with admit:
            if metrics.queued >= config.max_queue:
                metrics.count("rejected")
                return _error(503, f"the server's queue is full ({config.max_queue} requests); "
                                   "retry later", kind="server_busy")
            metrics.queued += 1
        rid, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        if chat.stream:
            loop, pieces = asyncio.get_running_loop(), asyncio.Queue()
            future = submit(chat, lambda text: loop.call_soon_threadsafe(pieces.put_nowait, text))
            future.add_done_callback(lambda _: loop.call_soon_threadsafe(pieces.put_nowait, None))
            return StreamingResponse(_stream(chat, future, pieces, rid, created, model),
                                     media_type="text/event-stream")
        try:
            result = await asyncio.wrap_future(submit_batched(chat) if config.max_batch > 1
                                               else submit(chat))
        except Exception as exc:  # noqa: BLE001 - reported to the client, the server goes on
            return _failure(exc)
        metrics.record(result)
        return {
            "id": rid, "object": "chat.completion", "created": created, "model": model,
            "choices": [{"index": 0, "finish_reason": finish_reason(result), "logprobs": None,
                         "message": {"role": "assistant", "content": result.text}}],
            "usage": usage(result, chat.question),
            "evspec": {"tokens": result.tokens, "stats": result.stats.to_dict()},
        }

    def release() -> None:
        with admit:
            metrics.queued -= 1

    def submit(chat: ChatQuestion, on_text=None):
        """Queue ``chat`` on the engine thread; its queue slot frees when it finishes, even
        when the client has gone."""
        try:
            future = worker.submit(run_question, chat, on_text)
        except RuntimeError:  # the worker is shutting down
            release()
            raise
        future.add_done_callback(lambda _: release())
        return future

    def submit_batched(chat: ChatQuestion) -> Future:
        """Queue ``chat`` to be answered in a batch with other waiting requests."""
        future: Future = Future()
        future.add_done_callback(lambda _: release())
        with pending_lock:
            pending.append((chat, future))
        try:
            worker.submit(run_batch)
        except RuntimeError as exc:  # the worker is shutting down
            future.set_exception(exc)
        return future

    def _failure(exc: Exception) -> JSONResponse:
        if isinstance(exc, (ValueError, FileNotFoundError)):  # bad media, bad options
            metrics.count("bad_request")
            return _error(400, str(exc), getattr(exc, "param", None))
        metrics.count("error")
        return _error(500, f"{type(exc).__name__}: {exc}", kind="server_error")

    async def _stream(chat: ChatQuestion, future, pieces: asyncio.Queue, rid: str, created: int,
                      model: str):
        def chunk(delta: dict, finish: str | None = None, **extra: Any) -> str:
            body = {"id": rid, "object": "chat.completion.chunk", "created": created,
                    "model": model, "choices": [{"index": 0, "delta": delta,
                                                 "finish_reason": finish, "logprobs": None}]}
            body.update(extra)
            return f"data: {json.dumps(body)}\n\n"

        yield chunk({"role": "assistant", "content": ""})
        while (piece := await pieces.get()) is not None:
            yield chunk({"content": piece})
        try:
            result = future.result()
        except Exception as exc:  # noqa: BLE001 - the status line is sent: report in-band
            yield f"data: {_failure(exc).body.decode()}\n\n"
            return
        metrics.record(result)
        extra: dict[str, Any] = {"evspec": {"tokens": result.tokens,
                                            "stats": result.stats.to_dict()}}
        if chat.include_usage:
            extra["usage"] = usage(result, chat.question)
        yield chunk({}, finish_reason(result), **extra)
        yield "data: [DONE]\n\n"

    return app


def serve(pipe: Pipeline, config: ServerConfig, *, host: str = "127.0.0.1", port: int = 8000,
          log_level: str = "info") -> None:
    """Run the server until interrupted (uvicorn)."""
    import uvicorn

    uvicorn.run(build_app(pipe, config), host=host, port=port, log_level=log_level)
