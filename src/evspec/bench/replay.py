"""Acceptance replay (DESIGN.md §5): time each drafter at real scale with the acceptance it
had on real models.

A *trace* is what a measured run recorded per drafter, γ and request: every round's
``(drafted k, accepted n)``, i.e. which drafted positions the target accepted (positions
``0..n-1``) in which round.  :func:`extract_traces` reads it from a run's records;
:class:`ReplayDrafter` plays it back on other models (7B shapes with random weights): the
drafter's real compute runs, then its round-r drafts are replaced by the target's own
greedy continuation at the first ``n_r`` positions and by wrong tokens after, so the engine
accepts exactly the recorded ``n_r``.  Acceptance is therefore the recorded one, position
by position and round by round (its decay with depth, its differences between drafters
and questions); only the timing is new.  Results are labelled
``acceptance-replayed (source: ...)``.

Request i of the replaying run plays the recorded answers from recorded request
``i mod M`` on, continuing into the next recorded answers when it runs longer (answer
ends included, as they were recorded).  The i.i.d. mode (``ControlledDrafter``) stays for
sweeps over α.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from itertools import chain, cycle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evspec.bench.records import read_json
from evspec.decoding.drafters.controlled import ControlledDrafter
from evspec.decoding.protocols import Drafter, Target

TRACE_FORMAT = "evspec-acceptance-trace"
TRACE_VERSION = 1


@dataclass
class DrafterTrace:
    """One drafter's recorded rounds: γ -> per recorded request, ``[(k, n), ...]``."""

    drafter: str
    source: str
    rounds: dict[int, list[list[tuple[int, int]]]] = field(default_factory=dict)

    def stream(self, gamma: int, start: int) -> Iterator[tuple[int, int]]:
        """The recorded rounds of γ from recorded request ``start mod M`` on, endlessly
        (raises at once where γ has no recorded rounds)."""
        if gamma not in self.rounds:
            have = ", ".join(map(str, sorted(self.rounds))) or "none"
            raise ValueError(
                f"the acceptance trace of {self.drafter!r} has no γ = {gamma} (recorded: {have}); "
                f"replay with one of those --gamma values"
            )
        answers = [a for a in self.rounds[gamma] if a]
        if not answers:
            raise ValueError(
                f"the acceptance trace of {self.drafter!r} at γ = {gamma} has no rounds"
            )
        i = start % len(answers)
        return chain.from_iterable(cycle(answers[i:] + answers[:i]))


@dataclass
class Traces:
    """A trace file: its ``source`` (what was measured, where) and every drafter's trace."""

    source: str
    drafters: dict[str, DrafterTrace]

    def for_drafter(self, name: str) -> DrafterTrace:
        if name not in self.drafters:
            have = ", ".join(sorted(self.drafters)) or "none"
            raise ValueError(f"the acceptance trace has no drafter {name!r} (recorded: {have})")
        return self.drafters[name]


def extract_traces(records: Iterable[dict[str, Any]], source: str) -> dict[str, Any]:
    """The trace document of a run's records: every ok speculative record's rounds, by
    drafter, γ and request (in record order)."""
    if not source.strip():
        raise ValueError(
            "an acceptance trace needs a source: say what was measured, e.g. "
            "'world checkpoints, 56 held-out questions, CPU float32'"
        )
    drafters: dict[str, dict[str, dict[str, list]]] = {}
    for r in records:
        if (
            r.get("status") != "ok"
            or r.get("kind") != "spec"
            or r.get("controlled_alpha") is not None
        ):
            continue
        if r.get("label", "measured") != "measured":
            continue  # never a trace of a trace
        by_gamma = drafters.setdefault(r["drafter"], {}).setdefault(
            str(int(r["gamma"])), {"request_ids": [], "rounds": []}
        )
        by_gamma["request_ids"].append(r["request_id"])
        by_gamma["rounds"].append([[int(row[0]), int(row[1])] for row in r.get("rounds", [])])
    if not drafters:
        raise ValueError("no measured speculative records to take acceptance from")
    return {
        "format": TRACE_FORMAT,
        "version": TRACE_VERSION,
        "source": source,
        "drafters": drafters,
    }


def write_traces(run_dir: Path, out: Path, source: str) -> Path:
    """Write the trace of the run in ``run_dir`` to ``out`` (JSON)."""
    from evspec.bench.records import RUN_FILE, read_records
    from evspec.data.atomic import atomic_write_text

    doc = extract_traces(read_records(run_dir), source)
    run_file = Path(run_dir) / RUN_FILE
    if run_file.exists():  # where the acceptance was measured
        env = (read_json(run_file).get("sessions") or [{}])[-1].get("env", {})
        doc["measured_by"] = {
            "command": " ".join(env.get("command", [])),
            "git": env.get("git"),
            "backend": env.get("backend"),
        }
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    # compact: one line per (drafter, γ) keeps the file small and its diffs readable
    lines = [
        json.dumps({k: v for k, v in doc.items() if k != "drafters"}, ensure_ascii=False)[:-1]
        + ', "drafters": {'
    ]
    entries = [
        (name, g, entry)
        for name, by_gamma in doc["drafters"].items()
        for g, entry in by_gamma.items()
    ]
    by_name: dict[str, list[str]] = {}
    for name, g, entry in entries:
        by_name.setdefault(name, []).append(
            f"  {json.dumps(g)}: {json.dumps(entry, separators=(',', ':'))}"
        )
    blocks = [
        f"{json.dumps(name)}: {{\n" + ",\n".join(rows) + "\n}" for name, rows in by_name.items()
    ]
    atomic_write_text(out, "\n".join(lines) + "\n" + ",\n".join(blocks) + "\n}}\n")
    return out


def load_traces(path: str | Path) -> Traces:
    """Read a trace file, checking its format and every round (0 <= n <= k)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: no acceptance trace (make one with `evspec trace RUN --out FILE`)"
        )
    doc = read_json(path)
    if not isinstance(doc, dict) or doc.get("format") != TRACE_FORMAT:
        raise ValueError(f"{path}: not an acceptance trace (format {TRACE_FORMAT!r} expected)")
    if doc.get("version") != TRACE_VERSION:
        raise ValueError(
            f"{path}: trace version {doc.get('version')!r}, this evspec reads {TRACE_VERSION}"
        )
    source = str(doc.get("source", "")).strip() or str(path)
    out: dict[str, DrafterTrace] = {}
    for name, by_gamma in doc.get("drafters", {}).items():
        trace = DrafterTrace(name, source)
        for g, entry in by_gamma.items():
            answers = []
            for rounds in entry["rounds"]:
                pairs = [(int(k), int(n)) for k, n in rounds]
                if any(not 0 <= n <= k for k, n in pairs):
                    raise ValueError(f"{path}: {name} γ={g} has a round with accepted > drafted")
                answers.append(pairs)
            trace.rounds[int(g)] = answers
        out[name] = trace
    return Traces(source, out)


class ReplayDrafter(ControlledDrafter):
    """Wrap ``inner`` so that its rounds are accepted as ``trace`` recorded.

    Call :meth:`use_gamma` then :meth:`set_reference` (the target-only greedy answer, and
    the request's index as ``stream``) before each ``generate``.  A round that drafts
    ``k`` tokens takes the next recorded round ``(k_r, n_r)``: positions ``< n_r`` right,
    the rest wrong (a round shorter than recorded keeps its first ``k``; positions a
    recorded round did not draft count as wrong).
    """

    def __init__(self, inner: Drafter, target: Target, trace: DrafterTrace, seed: int = 0) -> None:
        super().__init__(inner, target, 0.0, seed=seed)
        self.trace = trace
        self.name = f"{inner.name}@replay"
        self._gamma: int | None = None
        self._rounds: Iterator[tuple[int, int]] | None = None

    def use_gamma(self, gamma: int) -> None:
        """Replay the rounds recorded at draft length ``gamma`` (raises if there are none)."""
        self.trace.stream(gamma, 0)  # validates
        self._gamma = int(gamma)

    def set_reference(self, tokens: list[int], *, stream: int = 0) -> None:
        if self._gamma is None:
            raise RuntimeError("ReplayDrafter.set_reference before use_gamma(γ)")
        super().set_reference(tokens, stream=stream)
        self._rounds = self.trace.stream(self._gamma, int(stream))

    def _pattern(self, k: int) -> list[bool]:
        assert self._rounds is not None
        _, n = next(self._rounds)
        return [i < n for i in range(k)]
