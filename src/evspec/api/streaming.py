"""Answers piece by piece: the engine's token callbacks as text pieces, and an iterator over
them fed from a worker thread."""

from __future__ import annotations

import queue
import threading
from typing import Callable, Iterator

from evspec.decoding.stats import Result

#: text callback: receives each new piece of the answer as it is decoded
TextCallback = Callable[[str], None]


class TextEmitter:
    """Turns the engine's token callbacks into text pieces: decodes everything so far and
    hands on what is new, holding back an unfinished multi-byte character."""

    def __init__(self, target, on_text: TextCallback) -> None:
        self.target = target
        self.on_text = on_text
        self.ids: list[int] = []
        self.sent = ""

    def tokens(self, new: list[int]) -> None:
        self.ids.extend(int(t) for t in new)
        text = self.target.decode_text(self.ids).rstrip("\ufffd")
        self._send(text)

    def _send(self, text: str) -> None:
        if len(text) > len(self.sent) and text.startswith(self.sent):
            piece, self.sent = text[len(self.sent):], text
            self.on_text(piece)

    def finish(self, text: str) -> None:
        self._send(text)


_DONE = object()


class TokenStream:
    """An iterator over the answer's text pieces; the engine runs on a worker thread and the
    pieces cross over a queue.  ``result`` holds the :class:`Result` once iteration ends;
    an error in the engine is raised from the iterator."""

    def __init__(self, run: Callable[[TextCallback], Result]) -> None:
        self.result: Result | None = None
        self._queue: queue.Queue = queue.Queue()
        self._error: BaseException | None = None

        def work() -> None:
            try:
                self.result = run(self._queue.put)
            except BaseException as exc:  # handed to the consumer, not lost in the thread
                self._error = exc
            finally:
                self._queue.put(_DONE)

        self._thread = threading.Thread(target=work, name="evspec-stream", daemon=True)
        self._thread.start()

    def __iter__(self) -> Iterator[str]:
        while True:
            item = self._queue.get()
            if item is _DONE:
                break
            yield item
        self._thread.join()
        if self._error is not None:
            raise self._error
