"""OpenAI chat-completion requests -> one evspec question (no server imports here).

A request names the clip in the last user message as content parts, in the style vLLM
uses for video::

    {"role": "user", "content": [
        {"type": "text", "text": "What is moving?"},
        {"type": "video_url", "video_url": {"url": "file:///data/clip/frames"}},
        {"type": "events_url", "events_url": {"url": "data:application/octet-stream;base64,..."}}]}

A URL is ``file://PATH`` or a plain absolute path (under a directory the server allows),
``data:MIME;base64,DATA`` (video: an mp4 or a ``.npy`` of uint8 frames ``[T, H, W, 3]``;
events: a ``.npz``/``.npy``/``.h5`` stream file, recognised by its first bytes), or
``random`` (random images, for random-weight presets).  Earlier messages are ignored: each
request is one question about one clip.  Every problem raises :class:`BadRequest` with a
message saying what to send instead.
"""

from __future__ import annotations

import base64
import binascii
import io
import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

#: content-part types that carry the video / the event recording
VIDEO_PART, EVENTS_PART = "video_url", "events_url"
#: the largest base64 payload accepted, in bytes after decoding
MAX_MEDIA_BYTES = 64 << 20


class BadRequest(ValueError):
    """A request the server refuses with HTTP 400; ``param`` names the offending field."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


@dataclass
class Media:
    """One clip input as the request gave it: a local ``path``, decoded ``data`` bytes, or
    ``random``."""

    kind: str  # "path" | "data" | "random"
    path: str | None = None
    data: bytes | None = None


@dataclass
class ChatQuestion:
    """What one chat-completion request asks: the question, the clip, the decoding options
    (``None`` = the server's default)."""

    question: str
    video: Media
    events: Media | None
    stream: bool = False
    include_usage: bool = False
    decode: dict[str, Any] = field(default_factory=dict)


def _number(body: dict, key: str, low: float, high: float, *, integer: bool = False):
    value = body.get(key)
    if value is None:
        return None
    ok_type = isinstance(value, int) if integer else isinstance(value, (int, float))
    bad = isinstance(value, bool) or not ok_type or not math.isfinite(value)
    if bad or not low <= value <= high:
        kind = "an integer" if integer else "a number"
        raise BadRequest(f"'{key}' must be {kind} in [{low}, {high}], got {value!r}", key)
    return value


def parse_chat_request(
    body: Any, *, allowed_dirs: list[Path], max_tokens_limit: int
) -> ChatQuestion:
    """Validate an OpenAI ``/v1/chat/completions`` body and pull out the question."""
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("'messages' must be a non-empty list of chat messages", "messages")
    users = [m for m in messages if isinstance(m, dict) and m.get("role") == "user"]
    if any(not isinstance(m, dict) or not isinstance(m.get("role"), str) for m in messages):
        raise BadRequest("every message must be an object with a string 'role'", "messages")
    if not users:
        raise BadRequest("'messages' needs a message with role 'user' holding the question",
                         "messages")
    question, video, events = _parse_content(users[-1].get("content"), allowed_dirs)
    if video is None:
        raise BadRequest("the user message needs a video part: {\"type\": \"video_url\", "
                         "\"video_url\": {\"url\": \"file:///path/to/clip.mp4\"}} (a path, a "
                         "base64 data: URL, or 'random')", "messages")
    n = _number(body, "n", 1, 1, integer=True)
    del n  # one answer per request
    stop = body.get("stop")
    if stop not in (None, [], ""):
        raise BadRequest("'stop' is not supported: answers end at the model's end of sequence "
                         "or at max_tokens", "stop")
    decode: dict[str, Any] = {}
    limit = body.get("max_completion_tokens", body.get("max_tokens"))
    if limit is not None:
        key = "max_completion_tokens" if "max_completion_tokens" in body else "max_tokens"
        decode["max_new_tokens"] = _number({key: limit}, key, 1, max_tokens_limit, integer=True)
    for key, name, low, high, integer in (
        ("temperature", "temperature", 0.0, 2.0, False),
        ("top_p", "top_p", 1e-6, 1.0, False),
        ("seed", "seed", 0, 2**63 - 1, True),
        ("gamma", "gamma", 1, 64, True),
    ):
        value = _number(body, key, low, high, integer=integer)
        if value is not None:
            decode[name] = float(value) if not integer else int(value)
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise BadRequest(f"'stream' must be true or false, got {stream!r}", "stream")
    options = body.get("stream_options") or {}
    if not isinstance(options, dict):
        raise BadRequest("'stream_options' must be an object", "stream_options")
    return ChatQuestion(question=question, video=video, events=events, stream=stream,
                        include_usage=bool(options.get("include_usage", False)), decode=decode)


def _parse_content(
    content: Any, allowed_dirs: list[Path]
) -> tuple[str, Media | None, Media | None]:
    if isinstance(content, str):
        text, parts = content, []
    elif isinstance(content, list):
        texts, parts = [], []
        for part in content:
            if not isinstance(part, dict) or not isinstance(part.get("type"), str):
                raise BadRequest("each content part must be an object with a string 'type'",
                                 "messages")
            if part["type"] == "text":
                if not isinstance(part.get("text"), str):
                    raise BadRequest("a text part needs a string 'text'", "messages")
                texts.append(part["text"])
            elif part["type"] in (VIDEO_PART, EVENTS_PART):
                parts.append(part)
            else:
                raise BadRequest(f"content part type {part['type']!r} is not supported; use text, "
                                 f"{VIDEO_PART} or {EVENTS_PART}", "messages")
        text = "\n".join(texts)
    else:
        raise BadRequest("the user message's 'content' must be a string or a list of parts",
                         "messages")
    if not text.strip():
        raise BadRequest("the user message has no question text", "messages")
    media: dict[str, Media] = {}
    for part in parts:
        kind = part["type"]
        if kind in media:
            raise BadRequest(f"the user message has more than one {kind} part", "messages")
        url = part.get(kind)
        url = url.get("url") if isinstance(url, dict) else url
        if not isinstance(url, str) or not url:
            raise BadRequest(f"a {kind} part needs {{\"{kind}\": {{\"url\": ...}}}}", "messages")
        media[kind] = parse_media_url(url, allowed_dirs, kind)
    return text.strip(), media.get(VIDEO_PART), media.get(EVENTS_PART)


def parse_media_url(url: str, allowed_dirs: list[Path], kind: str) -> Media:
    """A content part's URL -> :class:`Media` (paths checked against ``allowed_dirs``)."""
    if url == "random":
        return Media("random")
    if url.startswith("data:"):
        head, sep, payload = url.partition(",")
        if not sep or not head.endswith(";base64"):
            raise BadRequest(f"a {kind} data URL must look like data:MIME;base64,DATA", "messages")
        if len(payload) > MAX_MEDIA_BYTES * 4 // 3 + 4:
            raise BadRequest(f"the {kind} payload exceeds {MAX_MEDIA_BYTES >> 20} MiB", "messages")
        try:
            data = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError):
            raise BadRequest(f"the {kind} data URL is not valid base64", "messages") from None
        if not data:
            raise BadRequest(f"the {kind} data URL is empty", "messages")
        return Media("data", data=data)
    path = url[len("file://"):] if url.startswith("file://") else url
    if "://" in path:
        raise BadRequest(f"{kind}: only file://, data: and 'random' URLs are served (nothing is "
                         f"downloaded), got {url[:60]!r}", "messages")
    if not os.path.isabs(path):
        raise BadRequest(f"{kind}: a local path must be absolute, got {path[:200]!r}", "messages")
    real = Path(os.path.realpath(path))
    if not any(real == d or d in real.parents for d in allowed_dirs):
        where = ", ".join(map(str, allowed_dirs)) or "none (start the server with "\
            "--allowed-media-dir DIR)"
        raise BadRequest(f"{kind}: {path[:200]} is outside the directories this server reads "
                         f"({where})", "messages")
    if not real.exists():
        raise BadRequest(f"{kind}: {path[:200]} does not exist", "messages")
    return Media("path", path=str(real))


#: leading bytes -> file suffix, for base64 payloads
_MAGIC = ((b"\x93NUMPY", ".npy"), (b"PK\x03\x04", ".npz"), (b"\x89HDF\r\n\x1a\n", ".h5"))


def media_input(media: Media | None, workdir: str, kind: str):
    """A :class:`Media` -> what :meth:`evspec.Pipeline.load_clip` takes (a path, an array,
    ``"random"`` or ``None``); data payloads are written under ``workdir`` (or, for a
    ``.npy`` of video frames, decoded directly)."""
    if media is None:
        return None
    if media.kind == "random":
        return "random"
    if media.kind == "path":
        return media.path
    data = media.data or b""
    if kind == VIDEO_PART and data.startswith(b"\x93NUMPY"):
        try:
            frames = np.load(io.BytesIO(data), allow_pickle=False)
        except ValueError as exc:
            raise BadRequest(f"video: the .npy payload does not load: {exc}", "messages") from None
        return frames
    if kind == VIDEO_PART:
        if data[4:8] != b"ftyp":
            raise BadRequest("video: a data URL must hold an mp4 file or a .npy of uint8 frames "
                             "[T, H, W, 3]", "messages")
        suffix = ".mp4"
    else:
        suffix = next((s for magic, s in _MAGIC if data.startswith(magic)), None)
        if suffix is None:
            raise BadRequest("events: a data URL must hold a .npz, .npy or .h5 event stream file",
                             "messages")
    fd, name = tempfile.mkstemp(suffix=suffix, dir=workdir)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    return name
