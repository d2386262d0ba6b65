"""evspec serve: a real server on 127.0.0.1 answered through the official openai client."""

from __future__ import annotations

import base64
import io
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
openai = pytest.importorskip("openai")
httpx = pytest.importorskip("httpx")

from api_paths import CLIP, EVENTS, HAVE_WORLD, ROOT, VIDEO  # noqa: E402

from evspec.api.server import ServerConfig, build_app  # noqa: E402

pytestmark = pytest.mark.skipif(not HAVE_WORLD, reason="world assets not shipped")
TIMEOUT = 60.0  # seconds, for every client call


class LiveServer:
    """uvicorn serving ``app`` on a free port of 127.0.0.1 in a thread."""

    def __init__(self, app) -> None:
        import uvicorn

        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0,
                                                    log_level="warning", lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the test server did not start")
            time.sleep(0.02)
        self.port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


def client(server: LiveServer):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", timeout=TIMEOUT,
                         max_retries=0)


def clip_parts(video: str = "file://" + VIDEO, events: str | None = "file://" + EVENTS):
    parts = [{"type": "video_url", "video_url": {"url": video}}]
    if events is not None:
        parts.append({"type": "events_url", "events_url": {"url": events}})
    return parts


def ask(question: str, **clip) -> list[dict]:
    return [{"role": "user", "content": [{"type": "text", "text": question}, *clip_parts(**clip)]}]


@pytest.fixture(scope="module")
def server(world_pipe):
    live = LiveServer(build_app(world_pipe, ServerConfig(allowed_media_dirs=[CLIP.parent],
                                                         max_queue=8)))
    yield live
    live.stop()


@pytest.fixture(scope="module")
def reference(world_pipe):
    """What the Pipeline (the engine) answers, question -> Result."""
    cache: dict = {}

    def answer(question: str):
        if question not in cache:
            cache[question] = world_pipe(video=VIDEO, events=EVENTS, question=question)
        return cache[question]

    return answer


def test_chat_completion_equals_generate(server, reference):
    done = client(server).chat.completions.create(model="evspec", messages=ask("What is moving?"))
    want = reference("What is moving?")
    assert done.choices[0].message.content == want.text
    extra = done.model_extra["evspec"]
    assert extra["tokens"] == want.tokens
    assert extra["stats"]["drafter"] == "event-head" and extra["stats"]["tau"] > 1.0
    assert done.usage.completion_tokens == len(want.tokens)
    assert done.choices[0].finish_reason in ("stop", "length")
    short = client(server).chat.completions.create(
        model="evspec", messages=ask("What is moving?"), max_tokens=3, extra_body={"gamma": 2})
    assert short.model_extra["evspec"]["tokens"] == want.tokens[:3]
    assert short.model_extra["evspec"]["stats"]["gamma"] == 2
    assert short.choices[0].finish_reason == "length"


def test_streaming_sends_the_same_answer(server, reference):
    chunks = list(client(server).chat.completions.create(
        model="evspec", messages=ask("What is moving?"), stream=True,
        stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == reference("What is moving?").text
    assert len(chunks) > 3  # the answer came in pieces
    last = chunks[-1]
    assert last.choices[0].finish_reason in ("stop", "length")
    assert last.model_extra["evspec"]["tokens"] == reference("What is moving?").tokens
    assert last.usage.completion_tokens == len(reference("What is moving?").tokens)


def test_base64_media_equal_paths(server, world_pipe, reference):
    frames = world_pipe.load_clip(VIDEO, EVENTS).video
    buf = io.BytesIO()
    np.save(buf, frames)
    video = "data:application/x-npy;base64," + base64.b64encode(buf.getvalue()).decode()
    with open(EVENTS, "rb") as fh:
        events = "data:application/octet-stream;base64," + base64.b64encode(fh.read()).decode()
    done = client(server).chat.completions.create(
        model="evspec", messages=ask("What is moving?", video=video, events=events))
    assert done.model_extra["evspec"]["tokens"] == reference("What is moving?").tokens


@pytest.mark.parametrize("messages, body, match", [
    (ask("What is moving?", events=None), {}, "needs events"),
    ([{"role": "user", "content": "What is moving?"}], {}, "needs a video part"),
    (ask("What is moving?", video="file:///etc/passwd"), {}, "outside the directories"),
    (ask("What is moving?", video="https://example.com/v.mp4"), {}, "nothing is downloaded"),
    (ask("What is moving?", video="data:video/mp4;base64,@@@"), {}, "not valid base64"),
    (ask("What is moving?"), {"temperature": 7}, "'temperature' must be"),
    (ask("What is moving?"), {"max_tokens": 0}, "'max_tokens' must be"),
    (ask("What is moving?"), {"n": 2}, "'n' must be"),
    ([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}], {},
     "not supported"),
])
def test_bad_requests_get_400_and_the_server_goes_on(server, messages, body, match):
    c = client(server)
    with pytest.raises(openai.BadRequestError, match=match):
        c.chat.completions.create(model="evspec", messages=messages, extra_body=body)
    assert httpx.get(server.url + "/health", timeout=TIMEOUT).json()["status"] == "ok"


def test_not_json_gets_400(server):
    r = httpx.post(server.url + "/v1/chat/completions", content=b"{nope", timeout=TIMEOUT)
    assert r.status_code == 400 and "not valid JSON" in r.json()["error"]["message"]


def test_health_models_metrics(server):
    health = httpx.get(server.url + "/health", timeout=TIMEOUT).json()
    assert health["drafter"] == "event-head" and health["target"] == "world"
    assert [m.id for m in client(server).models.list()] == ["evspec"]
    client(server).chat.completions.create(model="evspec", messages=ask("What is moving?"))
    metrics = httpx.get(server.url + "/metrics", timeout=TIMEOUT).text
    counts = dict(line.rsplit(" ", 1) for line in metrics.splitlines() if not line.startswith("#"))
    assert int(counts['evspec_requests_total{outcome="ok"}']) >= 1
    assert int(counts["evspec_accepted_tokens_total"]) > 0
    assert int(counts["evspec_queue_depth"]) == 0


def test_concurrent_clients_get_generates_answers(server, reference):
    questions = ["What is moving?", "How many objects are there?", "What color is the object?",
                 "Is anything moving?", "What is moving?", "How many objects are there?"]
    c = client(server)

    def one(q: str):
        done = c.chat.completions.create(model="evspec", messages=ask(q))
        return done.model_extra["evspec"]["tokens"], done.choices[0].message.content

    with ThreadPoolExecutor(max_workers=len(questions)) as pool:
        answers = list(pool.map(one, questions, timeout=5 * TIMEOUT))
    assert answers == [(reference(q).tokens, reference(q).text) for q in questions]


def test_full_queue_gets_503(world_pipe):
    app = build_app(world_pipe, ServerConfig(allowed_media_dirs=[CLIP.parent], max_queue=1))
    live = LiveServer(app)
    release = threading.Event()
    try:
        app.state.worker.submit(release.wait, TIMEOUT)  # the engine thread is busy
        with ThreadPoolExecutor(max_workers=1) as pool:
            first = pool.submit(client(live).chat.completions.create, model="evspec",
                                messages=ask("What is moving?"))
            deadline = time.monotonic() + TIMEOUT
            while httpx.get(live.url + "/health", timeout=TIMEOUT).json()["queue_depth"] < 1:
                assert time.monotonic() < deadline
                time.sleep(0.02)
            with pytest.raises(openai.APIStatusError, match="queue is full") as info:
                client(live).chat.completions.create(model="evspec",
                                                     messages=ask("What is moving?"))
            assert info.value.status_code == 503
            release.set()
            assert first.result(timeout=TIMEOUT).choices[0].message.content
    finally:
        release.set()
        live.stop()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_evspec_serve_command_on_the_tiny_preset():
    """The CLI verb starts a server a client can use, and stops on SIGTERM."""
    port = _free_port()
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "evspec", "serve", "--target", "tiny-random", "--drafter",
         "eventgpt", "--device", "cpu", "--port", str(port), "--max-new-tokens", "5",
         "--log-level", "warning"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            assert proc.poll() is None, proc.stdout.read()
            assert time.monotonic() < deadline, "evspec serve did not come up"
            try:
                if httpx.get(url + "/health", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        c = openai.OpenAI(base_url=url + "/v1", api_key="unused", timeout=TIMEOUT, max_retries=0)
        done = c.chat.completions.create(
            model="evspec", messages=ask("what moves?", video="random", events="random"))
        assert done.model_extra["evspec"]["stats"]["drafter"] == "eventgpt"
        assert 1 <= len(done.model_extra["evspec"]["tokens"]) <= 5
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)


def test_fuzzed_bodies_never_break_the_server(server):
    """Bounded fuzz: arbitrary JSON and mutations of a good body get 200 or 400, never a 5xx."""
    from hypothesis import HealthCheck, given, settings, strategies as st

    leaf = st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.floats(allow_nan=True),
                     st.text(max_size=8), st.just("random"), st.just("file://" + VIDEO))
    junk = st.recursive(leaf, lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=6), inner, max_size=3)),
        max_leaves=8)
    good = {"model": "evspec", "messages": ask("What is moving?"), "max_tokens": 3}
    keys = ["model", "messages", "max_tokens", "temperature", "top_p", "seed", "stream", "n",
            "stop", "gamma", "stream_options"]
    mutated = st.fixed_dictionaries({}, optional={k: junk for k in keys}).map(
        lambda extra: {**good, **extra})
    bodies = st.one_of(junk, mutated)

    @settings(max_examples=40, deadline=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(bodies)
    def check(body):
        r = httpx.post(server.url + "/v1/chat/completions", content=json.dumps(body),
                       timeout=TIMEOUT)
        assert r.status_code in (200, 400), (r.status_code, r.text[:300], body)
        if r.status_code == 400:
            assert r.json()["error"]["message"]

    check()
    assert httpx.get(server.url + "/health", timeout=TIMEOUT).json()["status"] == "ok"


def test_readme_server_example_runs(server, reference):
    """The README's client example, pointed at the test server."""
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"<!-- server-example -->\s*```python\n(.*?)```", readme, re.S)
    assert block, "README lost its marked server example"
    code = block.group(1).replace("http://127.0.0.1:8000", server.url)
    code = code.replace("/abs/path/to/src/evspec/assets/world/clips/world-000018", str(CLIP))
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102
    assert namespace["reply"].choices[0].message.content == reference("What is moving?").text


def test_a_stream_dropped_by_its_client_frees_its_queue_slot(server):
    body = {"model": "evspec", "messages": ask("What is moving?"), "stream": True}
    with httpx.stream("POST", server.url + "/v1/chat/completions", json=body,
                      timeout=TIMEOUT) as r:
        assert r.status_code == 200
        next(r.iter_lines())  # the first chunk, then hang up
    deadline = time.monotonic() + TIMEOUT
    while httpx.get(server.url + "/health", timeout=TIMEOUT).json()["queue_depth"]:
        assert time.monotonic() < deadline, "the dropped stream kept its slot"
        time.sleep(0.05)


def test_waiting_requests_are_answered_in_one_batch(world_pipe, reference):
    app = build_app(world_pipe, ServerConfig(allowed_media_dirs=[CLIP.parent], max_queue=8,
                                             max_batch=5))
    live = LiveServer(app)
    release = threading.Event()
    questions = ["What is moving?", "How many objects are there?", "What color is the object?",
                 "What is moving?"]
    try:
        app.state.worker.submit(release.wait, TIMEOUT)  # hold the engine while they queue
        with ThreadPoolExecutor(max_workers=len(questions) + 1) as pool:
            futures = [pool.submit(client(live).chat.completions.create, model="evspec",
                                   messages=ask(q)) for q in questions]
            broken = pool.submit(client(live).chat.completions.create, model="evspec",
                                 messages=ask("What is moving?", video="file://" + EVENTS))
            deadline = time.monotonic() + TIMEOUT
            while httpx.get(live.url + "/health", timeout=TIMEOUT).json()["queue_depth"] < 5:
                assert time.monotonic() < deadline
                time.sleep(0.02)
            release.set()
            done = [f.result(timeout=5 * TIMEOUT) for f in futures]
            with pytest.raises(openai.BadRequestError):  # its own error, not the batch's
                broken.result(timeout=5 * TIMEOUT)
        assert [d.model_extra["evspec"]["tokens"] for d in done] == [
            reference(q).tokens for q in questions]
        metrics = httpx.get(live.url + "/metrics", timeout=TIMEOUT).text
        assert "evspec_batches_total 1\n" in metrics
        assert "evspec_batched_requests_total 4\n" in metrics
    finally:
        release.set()
        live.stop()
