"""The embedded-default demo: answer a few questions with and without drafting and show
that drafting changed nothing but the time.

Uses the shipped world checkpoints and sample clips (``evspec/assets/world``) when they
are present; otherwise the random-weight ``tiny-random`` presets on random clips (the
answers are then gibberish, but the losslessness and the statistics are real).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from evspec.decoding.drafters import make_drafter
from evspec.decoding.engine import generate
from evspec.decoding.stats import Result
from evspec.models.request import Request

ASSETS = Path(__file__).parent / "assets" / "world"


@dataclass
class DemoCase:
    request: Request
    reference: str | None  # the dataset's answer, when known


@dataclass
class DemoRow:
    case: DemoCase
    baseline: Result
    speculative: Result

    @property
    def identical(self) -> bool:
        return self.baseline.tokens == self.speculative.tokens


def world_available() -> bool:
    return (ASSETS / "manifest.json").is_file() and (ASSETS / "target").is_dir()


def tiny_cases(target, drafter_model, n: int = 3, seed: int = 0) -> list[DemoCase]:
    from evspec.session import random_images

    questions = ["What is moving?", "Which direction does the object move?", "Describe the scene."]
    cases = []
    for i in range(n):
        video = random_images(target.num_frames, target.config.vision_config.image_size, seed + i)
        events = random_images(drafter_model.config.n_event_images, drafter_model.config.image_size, seed + 100 + i)
        cases.append(DemoCase(Request(questions[i % len(questions)], video, events, clip_id=f"random-{i}"), None))
    return cases


def run_demo(
    target,
    drafter_model,
    cases: list[DemoCase],
    *,
    drafter: str = "eventgpt",
    gamma: int = 4,
    max_new_tokens: int = 32,
    on_row: Callable[[DemoRow], None] | None = None,
) -> list[DemoRow]:
    """Run every case target-only and with ``drafter``; return both results per case."""
    rows = []
    for case in cases:
        base = generate(target, case.request, None, max_new_tokens=max_new_tokens)
        spec = generate(
            target, case.request, make_drafter(drafter, target=target, draft_model=drafter_model),
            gamma=gamma, max_new_tokens=max_new_tokens,
        )
        row = DemoRow(case, base, spec)
        rows.append(row)
        if on_row:
            on_row(row)
    return rows


def format_rounds(result: Result, target) -> list[str]:
    """One line per round: which drafted tokens were accepted (✓) and the target's token."""
    lines = []
    pos = 1  # tokens[0] came from prefill
    toks = result.tokens
    for i, r in enumerate(result.stats.rounds):
        acc = toks[pos : pos + r.accepted]
        nxt = toks[pos + r.accepted : pos + r.accepted + 1]
        shown = "".join(f"[{target.decode_text([t])}]✓" for t in acc)
        tail = f" + target [{target.decode_text(nxt)}]" if nxt else ""
        lines.append(f"  round {i + 1:2d}: {r.accepted}/{r.drafted} accepted {shown}{tail}")
        pos += r.accepted + 1
    return lines


def set_cpu_threads() -> None:
    """Small models on few cores run fastest single-threaded (less dispatch contention)."""
    if not torch.cuda.is_available():
        torch.set_num_threads(1)
