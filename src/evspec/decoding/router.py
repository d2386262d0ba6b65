"""Query routing (research note §6.3): per question, pick the drafter (or none).

An event camera sees motion and nothing else (no colour, no static objects), so drafting
from it only pays for some questions.  A router maps a request to a drafter *name*:

* :class:`HeuristicRouter`: the question type (``Request.qtype``, or the keyword
  classifier :func:`classify_question` when the type is unknown) looked up in a table;
  by default colour questions get ``none`` and everything else the event drafter.
* :class:`LearnedRouter`: a bag-of-words multinomial logistic regression trained (numpy,
  full-batch gradient descent from zeros: deterministic) on (question -> best drafter)
  labels, e.g. :func:`fastest_labels` of a benchmark run; saved as JSON.

:class:`RoutedDrafter` wraps a router and a pool of drafters as one ``Drafter`` (so the
engine and the harness need no change); the ``none`` route proposes nothing, which is
the target-only loop.  Routing never changes the output: every drafter is lossless.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import torch

from evspec.decoding.drafters.base import empty_draft
from evspec.decoding.protocols import Draft, Drafter, Target
from evspec.models.request import Request
from evspec.models.state import TargetState

NONE = "none"

#: (question type, trigger words or phrases), checked in this order: the first hit wins
#: ("What colour is the moving circle?" is a colour question, "Which shape is red?" a
#: shape question)
KEYWORDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("colour", ("colour", "color", "colours", "colors", "coloured", "colored")),
    ("shape", ("shape", "shapes", "shaped")),
    ("count", ("how many", "count", "number of", "objects are there")),
    ("direction", ("direction", "where", "which way", "going", "heading", "towards", "left", "right")),
    ("speed", ("fast", "slow", "speed", "quickly", "slowly")),
    ("moving", ("moving", "moves", "move", "motion", "movement")),
    ("describe", ("describe", "happening", "happens", "see", "scene", "video")),
)


def words(text: str) -> list[str]:
    """Lower-case alphabetic words of ``text``."""
    return re.findall(r"[a-z]+", text.lower())


def classify_question(question: str) -> str | None:
    """The question type by keywords (see :data:`KEYWORDS`), or None when nothing matches."""
    text = " " + " ".join(words(question)) + " "
    for qtype, triggers in KEYWORDS:
        if any(f" {t} " in text for t in triggers):
            return qtype
    return None


@runtime_checkable
class Router(Protocol):
    def route(self, request: Request) -> str:
        """The drafter name for ``request`` (``"none"`` = target only)."""
        ...


@dataclass(frozen=True)
class HeuristicRouter:
    """``table``: (question type, drafter name) pairs; ``default`` for types not in the
    table and questions the classifier cannot type.  ``event_drafter`` fills the default
    table (every type but colour)."""

    event_drafter: str = "eventgpt"
    table: tuple[tuple[str, str], ...] | None = None
    default: str | None = None

    def __post_init__(self) -> None:
        if self.table is None:
            types = [q for q, _ in KEYWORDS]
            object.__setattr__(self, "table", tuple((q, NONE if q == "colour" else self.event_drafter) for q in types))
        if self.default is None:
            object.__setattr__(self, "default", self.event_drafter)
        for pair in self.table:
            if len(pair) != 2 or not all(isinstance(x, str) and x for x in pair):
                raise ValueError(f"HeuristicRouter.table entries must be (qtype, drafter name) strings, got {pair!r}")

    def qtype(self, request: Request) -> str | None:
        return request.qtype or classify_question(request.question)

    def route(self, request: Request) -> str:
        qtype = self.qtype(request)
        return dict(self.table).get(qtype, self.default) if qtype else self.default


# -- the learned router ----------------------------------------------------------------------------


def fastest_labels(times_ms: Mapping[str, Sequence[float]], *, margin: float = 0.0) -> list[str]:
    """Per item, the drafter name with the smallest time (``times_ms[name][i]``; ties go
    to the earlier name).  With ``margin`` > 0, ``none`` (when present) keeps the item
    unless another drafter is faster by more than that fraction."""
    names = list(times_ms)
    if not names:
        raise ValueError("fastest_labels needs at least one drafter's times")
    n = len(times_ms[names[0]])
    if any(len(times_ms[k]) != n for k in names):
        raise ValueError("fastest_labels: every drafter needs one time per item")
    labels = []
    for i in range(n):
        best = min(names, key=lambda k: (times_ms[k][i], names.index(k)))
        if margin > 0 and NONE in times_ms and best != NONE:
            if times_ms[best][i] > times_ms[NONE][i] * (1.0 - margin):
                best = NONE
        labels.append(best)
    return labels


@dataclass
class LearnedRouter:
    """Bag-of-words softmax regression: ``vocab`` words, ``classes`` drafter names,
    ``weights [C, W]``, ``bias [C]``.  Build with :meth:`fit` or :meth:`load`."""

    vocab: list[str]
    classes: list[str]
    weights: np.ndarray
    bias: np.ndarray
    _index: dict[str, int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.weights = np.asarray(self.weights, dtype=np.float64)
        self.bias = np.asarray(self.bias, dtype=np.float64)
        c, w = len(self.classes), len(self.vocab)
        if not c or self.weights.shape != (c, w) or self.bias.shape != (c,):
            raise ValueError(
                f"LearnedRouter: weights {self.weights.shape} / bias {self.bias.shape} do not fit "
                f"{c} classes x {w} words"
            )
        self._index = {t: i for i, t in enumerate(self.vocab)}

    # -- features ---------------------------------------------------------------------------
    def features(self, questions: Sequence[str]) -> np.ndarray:
        """``[N, W]`` 0/1 word presence."""
        x = np.zeros((len(questions), len(self.vocab)))
        for n, q in enumerate(questions):
            for t in words(q):
                i = self._index.get(t)
                if i is not None:
                    x[n, i] = 1.0
        return x

    def predict_proba(self, questions: Sequence[str]) -> np.ndarray:
        """``[N, C]`` class probabilities."""
        z = self.features(questions) @ self.weights.T + self.bias  # [N, C]
        z -= z.max(axis=1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)

    def predict(self, question: str) -> str:
        return self.classes[int(np.argmax(self.predict_proba([question])[0]))]

    def route(self, request: Request) -> str:
        return self.predict(request.question)

    # -- training ---------------------------------------------------------------------------
    @classmethod
    def fit(
        cls, questions: Sequence[str], labels: Sequence[str], *, l2: float = 1e-3, steps: int = 300, lr: float = 1.0
    ) -> LearnedRouter:
        """Full-batch gradient descent on the mean cross-entropy + ``l2``·|W|², from zeros."""
        if len(questions) != len(labels) or not questions:
            raise ValueError(f"LearnedRouter.fit: {len(questions)} questions vs {len(labels)} labels (need >= 1 each)")
        if steps < 1 or lr <= 0 or l2 < 0:
            raise ValueError(f"LearnedRouter.fit: need steps >= 1, lr > 0, l2 >= 0; got {steps}, {lr}, {l2}")
        vocab = sorted({t for q in questions for t in words(q)})
        classes = sorted(set(labels))
        model = cls(vocab, classes, np.zeros((len(classes), len(vocab))), np.zeros(len(classes)))
        x = model.features(questions)  # [N, W]
        y = np.zeros((len(labels), len(classes)))  # [N, C] one-hot
        y[np.arange(len(labels)), [classes.index(lab) for lab in labels]] = 1.0
        n = float(len(labels))
        for _ in range(steps):
            p = model.predict_proba(questions)  # [N, C]
            g = (p - y) / n  # d loss / d logits
            model.weights -= lr * (g.T @ x + 2.0 * l2 * model.weights)
            model.bias -= lr * g.sum(axis=0)
        return model

    # -- files ------------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        data = {"kind": "evspec-learned-router", "version": 1, "vocab": self.vocab, "classes": self.classes,
                "weights": self.weights.tolist(), "bias": self.bias.tolist()}
        path.write_text(json.dumps(data, indent=1))
        return path

    @classmethod
    def load(cls, path: str | Path) -> LearnedRouter:
        path = Path(path)
        data = _read_router_file(path, "evspec-learned-router", "a learned router")
        try:
            return cls(list(data["vocab"]), list(data["classes"]), data["weights"], data["bias"])
        except KeyError as exc:
            raise ValueError(f"{path}: learned router file lacks the field {exc}") from exc


def _read_router_file(path: Path, kind: str, what: str) -> dict:
    """The JSON object of a router file whose ``kind`` is ``kind`` (``what`` names it in the
    ValueError for an unreadable file, a non-object or another kind)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: cannot read {what} ({exc})") from exc
    if not isinstance(data, dict) or data.get("kind") != kind:
        found = data.get("kind") if isinstance(data, dict) else type(data).__name__
        raise ValueError(f"{path}: not {what} file (kind = {found!r})")
    return data


# -- a question-type table learned from timings ---------------------------------------------------

ROUTER_KIND = "evspec-qtype-router"


def learn_qtype_table(
    qtypes: Sequence[str | None],
    times_ms: Mapping[str, Sequence[float]],
    *,
    default: str,
    margin: float = 0.0,
) -> HeuristicRouter:
    """A question-type table from per-item times: ``times_ms[drafter][i]`` is the time of
    item ``i`` (of type ``qtypes[i]``) with that drafter.  Per type, the drafter with the
    least total time wins, but a drafter other than ``default`` only when it beats
    ``default`` by more than the fraction ``margin``; types without items, and questions the
    classifier cannot type, get ``default``.  Learn from validation items only."""
    names = list(times_ms)
    if default not in names:
        raise ValueError(f"learn_qtype_table: the default {default!r} needs times too "
                         f"(have {names})")
    if not 0.0 <= margin < 1.0:
        raise ValueError(f"learn_qtype_table: margin is a fraction in [0, 1), got {margin}")
    n = len(qtypes)
    if any(len(times_ms[k]) != n for k in names):
        raise ValueError("learn_qtype_table: every drafter needs one time per item")
    table = []
    for qtype in sorted({q for q in qtypes if q}):
        idx = [i for i, q in enumerate(qtypes) if q == qtype]
        total = {k: float(sum(times_ms[k][i] for i in idx)) for k in names}
        best = min(names, key=lambda k: (total[k], names.index(k)))
        if best != default and total[best] > total[default] * (1.0 - margin):
            best = default
        table.append((qtype, best))
    return HeuristicRouter(event_drafter=default, table=tuple(table), default=default)


def save_qtype_table(
    router: HeuristicRouter, path: str | Path, *, about: Mapping | None = None
) -> Path:
    """Write ``router``'s table as JSON (``about``: how it was learned, kept beside)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"kind": ROUTER_KIND, "version": 1, "table": dict(router.table or ()),
            "default": router.default, "about": dict(about or {})}
    path.write_text(json.dumps(data, indent=1) + "\n")
    return path


def load_qtype_table(path: str | Path) -> HeuristicRouter:
    """Read a table written by :func:`save_qtype_table`."""
    path = Path(path)
    data = _read_router_file(path, ROUTER_KIND, "a question-type router")
    table, default = data.get("table"), data.get("default")
    if not isinstance(table, dict) or not isinstance(default, str):
        raise ValueError(f"{path}: a question-type router needs a 'table' object and a "
                         "'default' name")
    return HeuristicRouter(event_drafter=default, table=tuple(table.items()), default=default)


# -- routing inside the engine -------------------------------------------------------------------


class RoutedDrafter:
    """One ``Drafter`` that, per request, delegates to ``pool[router.route(request)]``
    (``"none"`` -> propose nothing: the target-only loop).  ``routes`` logs each choice."""

    def __init__(self, router: Router, pool: Mapping[str, Drafter | None], *, name: str = "router") -> None:
        self.router, self.pool, self.name = router, dict(pool), name
        self.needs_target_hidden = any(getattr(d, "needs_target_hidden", False) for d in self.pool.values() if d)
        self.timings: dict[str, float] = {}
        self.routes: list[str] = []
        self._active: Drafter | None = None

    def _route(self, request: Request) -> str:
        route = self.router.route(request)
        if route != NONE and route not in self.pool:
            raise ValueError(f"router chose drafter {route!r}, which is not in the pool {sorted(self.pool)}")
        return route

    def prefetch(self, request: Request) -> None:
        """Let the chosen drafter start its own inputs before the target's prefill."""
        route = self._route(request)
        fetch = getattr(self.pool.get(route), "prefetch", None)
        if fetch is not None:
            fetch(request)

    def prepare_steps(self, max_gamma: int) -> int:
        """Every pooled drafter's fixed-shape steps (see ``HeadDrafter.prepare_steps``)."""
        made = 0
        for drafter in self.pool.values():
            prepare = getattr(drafter, "prepare_steps", None)
            if prepare is not None:
                made += int(prepare(max_gamma))
        return made

    def begin(self, request: Request, target: Target, state: TargetState, first_token: int) -> None:
        route = self._route(request)
        self.routes.append(route)
        self._active = None if route == NONE else self.pool[route]
        self.timings = {}
        if self._active is not None:
            self._active.begin(request, target, state, first_token)
            self.timings = dict(getattr(self._active, "timings", {}))

    def propose(self, k: int, temperature: float, generator: torch.Generator | None) -> Draft:
        if self._active is None:
            return empty_draft()
        return self._active.propose(k, temperature, generator)

    def accept(self, n_accepted: int, next_token: int, target_hidden: torch.Tensor | None = None) -> None:
        if self._active is None:
            return
        if getattr(self._active, "needs_target_hidden", False):
            self._active.accept(n_accepted, next_token, target_hidden=target_hidden)
        else:
            self._active.accept(n_accepted, next_token)

    def end(self) -> None:
        if self._active is not None:
            self._active.end()
        self._active = None


def make_event_router(
    target: Target,
    draft_model: object,
    *,
    name: str = "event-router",
    router_path: str | Path | None = None,
    event_head_path: str | Path | None = None,
    target_head_path: str | Path | None = None,
    static: bool | None = None,
) -> RoutedDrafter:
    """``event-router``: each question to the ``event-head`` or the event-blind
    ``target-head`` by its type.  The table: ``router_path``, else ``router.json`` shipped
    beside the heads (learned from validation timings), else colour questions (which events
    cannot see) to the target-head and the rest to the event-head."""
    from evspec.decoding.drafters import make_drafter, shipped_modules

    pool: dict[str, Drafter | None] = {}
    for head, path in (("event-head", event_head_path), ("target-head", target_head_path)):
        options: dict[str, object] = {"static": static}
        if path is not None:
            options["head_path"] = path
        pool[head] = make_drafter(head, target=target, draft_model=draft_model, **options)
    shipped = shipped_modules() / "router.json"
    if router_path is None and shipped.is_file():
        router_path = shipped
    if router_path is not None:
        router: Router = load_qtype_table(router_path)
    else:
        table = tuple((q, "target-head" if q == "colour" else "event-head") for q, _ in KEYWORDS)
        router = HeuristicRouter(event_drafter="event-head", table=table)
    unknown = {r for _, r in (router.table or ())} | {router.default}
    unknown -= set(pool) | {NONE}
    if unknown:
        raise ValueError(f"router table names drafters {sorted(unknown)}; event-router pools "
                         f"{sorted(pool)} and {NONE!r}")
    return RoutedDrafter(router, pool, name=name)
