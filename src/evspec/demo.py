"""The embedded-default demo: answer a few questions with and without drafting and show
that drafting changed nothing but the time.

Uses the shipped world checkpoints and sample clips (``evspec/assets/world``, or
``$EVSPEC_ASSETS/world`` when that variable names another assets folder) when they are
present; otherwise the random-weight ``tiny-random`` presets on random clips (the answers
are then gibberish, but the losslessness and the statistics are real).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from evspec.decoding.drafters import make_drafter
from evspec.decoding.engine import generate
from evspec.decoding.stats import Result
from evspec.loading import ASSETS_ENV, world_assets, world_available  # noqa: F401 (ASSETS_ENV)
from evspec.models.request import Request


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


def load_world_models(assets: str | Path | None = None):
    """``(target, drafter_model)``: the shipped world checkpoints (fp16 on disk), loaded in
    float32 on the CPU, where the demo runs (float32 keeps greedy SD exactly lossless)."""
    from evspec.loading import ModelSpec, load_models

    root = world_assets(assets)
    if not world_available(assets):
        raise FileNotFoundError(
            f"{root}: no shipped world models (expected manifest.json, target/, drafter/); "
            "run benchmarks/ship_world.sh or point EVSPEC_ASSETS at an assets folder"
        )
    loaded = load_models(ModelSpec(target=root / "target", draft_model=root / "drafter",
                                   device="cpu", dtype="float32"))
    return loaded.target, loaded.draft


def load_world_cases(
    target, drafter_model, limit: int = 6, assets: str | Path | None = None
) -> list[DemoCase]:
    """Up to ``limit`` questions about the shipped clips, one question type after another
    and one clip after another (so a short demo shows colour, motion, counting, ... on
    different scenes), with their references."""
    from evspec.data.loading import load_clip_inputs
    from evspec.data.manifest import load_manifest
    from evspec.loading import ClipSizes

    if limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    root = world_assets(assets)
    manifest = load_manifest(root / "manifest.json")
    # interleave the clips, rotating each clip's questions so clip j starts at its j-th
    depth = max((len(e.questions) for e in manifest.clips), default=0)
    pending = [
        (e, e.questions[(i + j) % len(e.questions)])
        for i in range(depth) for j, e in enumerate(manifest.clips) if i < len(e.questions)
    ]
    chosen: list[tuple] = []
    seen: set[str | None] = set()
    while pending and len(chosen) < limit:  # round-robin over question types
        fresh = [(e, q) for e, q in pending if q.qtype not in seen]
        if not fresh:
            seen.clear()
            continue
        pick = fresh[0]
        chosen.append(pick)
        pending.remove(pick)
        seen.add(pick[1].qtype)
    sizes = ClipSizes.of(target, drafter_model)
    inputs: dict[str, tuple] = {}
    cases = []
    for entry, qa in chosen:
        if entry.id not in inputs:
            inputs[entry.id] = load_clip_inputs(
                entry, root, n_event_images=sizes.n_event_images, num_frames=sizes.num_frames,
                canvas="sensor", warn_window=False,
            )
        video, events = inputs[entry.id]
        request = Request(qa.question, video=video, event_images=events, clip_id=entry.id, qtype=qa.qtype)
        cases.append(DemoCase(request, qa.answer))
    return cases


def tiny_cases(target, drafter_model, n: int = 3, seed: int = 0) -> list[DemoCase]:
    from evspec.loading import ClipSizes, random_images

    questions = ["What is moving?", "Which direction does the object move?", "Describe the scene."]
    sizes = ClipSizes.of(target, drafter_model)
    cases = []
    for i in range(n):
        video = random_images(sizes.num_frames, sizes.frame_size, seed + i)
        events = random_images(sizes.n_event_images, sizes.event_size, seed + 100 + i)
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
    warmup: bool = True,
    cache_clips: bool = True,
) -> list[DemoRow]:
    """Run every case target-only and with ``drafter``; return both results per case.

    ``cache_clips``: each clip's media are encoded once and reused by its questions (the
    models' prefix caches, and the event-head's per-clip event memory), for both runs
    alike; with ``warmup`` every clip is then encoded by an untimed pass of both runs
    before its first timed question, so every timed pair sees the same warm caches.
    Without ``cache_clips``, ``warmup`` runs the first case once both ways untimed (no
    cold-start costs in the first row).  The two runs of a case go in alternating order."""
    draft = make_drafter(drafter, target=target, draft_model=drafter_model)
    models = [m for m in (target, drafter_model)
              if m is not None and hasattr(m, "enable_prefix_cache")]
    clips = {c.request.clip_id for c in cases}
    if cache_clips:
        for m in models:
            m.enable_prefix_cache(max_clips=max(1, len(clips)))
    warmed: set[str | None] = set()
    rows = []
    try:
        for i, case in enumerate(cases):
            fresh = case.request.clip_id not in warmed or case.request.clip_id is None
            if warmup and (fresh if cache_clips else not warmed):
                generate(target, case.request, None, max_new_tokens=max_new_tokens)
                generate(target, case.request, draft, gamma=gamma, max_new_tokens=max_new_tokens)
            warmed.add(case.request.clip_id)
            def run(d):
                return generate(target, case.request, d, gamma=gamma, max_new_tokens=max_new_tokens)

            if i % 2 == 0:
                base = run(None)
                spec = run(draft)
            else:
                spec = run(draft)
                base = run(None)
            row = DemoRow(case, base, spec)
            rows.append(row)
            if on_row:
                on_row(row)
    finally:
        if cache_clips:
            for m in models:
                m.disable_prefix_cache()
    return rows


def default_drafter(assets: str | Path | None = None) -> str:
    """The demo's drafter: ``event-router`` (event-head, or the event-blind target-head for
    the questions events cannot answer) when both heads are shipped beside the world
    checkpoints, ``event-head`` when only it is, else the naive ``eventgpt`` drafter."""
    heads = world_assets(assets) / "heads"
    if not world_available(assets) or not (heads / "event-head" / "config.json").is_file():
        return "eventgpt"
    return "event-router" if (heads / "target-head" / "config.json").is_file() else "event-head"


def format_rounds(result: Result, target) -> list[str]:
    """One line per round: which drafted tokens were accepted (✓) and the target's token."""
    lines = []
    pos = 1  # tokens[0] came from prefill
    toks = result.tokens
    for i, r in enumerate(result.stats.rounds):
        acc = toks[pos : pos + r.accepted]
        nxt = toks[pos + r.accepted : pos + r.accepted + 1]
        shown = "".join(f"[{_token_text(target, t)}]✓" for t in acc)
        tail = f" + target [{_token_text(target, nxt[0])}]" if nxt else ""
        lines.append(f"  round {i + 1:2d}: {r.accepted}/{r.drafted} accepted {shown}{tail}")
        pos += r.accepted + 1
    return lines


def _token_text(target, token: int) -> str:
    """One token as text; EOS shown as ``</s>`` (decoding skips special tokens)."""
    return "</s>" if token == target.eos_token_id else target.decode_text([token])


def set_cpu_threads() -> int:
    """Small models on few cores run fastest single-threaded: with two OpenMP threads a
    2-row linear (a verification pass) costs far more than a 1-row one, which would charge
    speculative decoding for thread hand-offs rather than arithmetic.  Returns the intra-op
    threads now in use."""
    if not torch.cuda.is_available():
        torch.set_num_threads(1)
    return torch.get_num_threads()
