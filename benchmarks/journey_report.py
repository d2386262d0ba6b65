"""The report of ``journey.py``: ``journey.json`` and ``journey.md`` from the measured
stages, with the labelled projection to a full instruction set."""

from __future__ import annotations

import json
import platform
import shutil
import subprocess
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from journey import JourneyConfig, Stage

REPO = Path(__file__).resolve().parent.parent


def _gib(n: int | None) -> str:
    return "–" if not n else f"{n / 2**30:.2f}"


def _environment() -> dict:
    env = {"python": platform.python_version(), "machine": platform.node()}
    try:
        import torch
        import transformers

        env |= {"torch": torch.__version__, "transformers": transformers.__version__}
        if torch.cuda.is_available():
            env["gpu"] = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True)
        env["git"] = rev.stdout.strip()
    except OSError:
        pass
    return env


def report(
    cfg: JourneyConfig, stages: list[Stage], out: Path, work: Path, failure: str | None,
    *, complete: bool = True,
) -> dict:
    from evspec.bench.mdtable import md_table  # here: the measured --exec children stay light

    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for s in stages:
        row = asdict(s) | {"per_1000_questions_s": s.per_1000_s}
        rows.append(row)
    by = {s.name: s for s in stages}
    projection = {}
    collect = by.get("collect-train")
    if collect is not None and collect.extra.get("loop_s_per_1000_questions"):
        per = collect.extra["loop_s_per_1000_questions"]
        projection["collect"] = per * cfg.full_questions / 1000 / 3600
    bench = by.get("bench")
    answers = bench.extra.get("answer_s_per_1000_questions", {}) if bench else {}
    for drafter, per in answers.items():
        projection[f"answer with {drafter}"] = per * cfg.full_questions / 1000 / 3600
    result = {
        "label": "random weights: acceptance and answers are meaningless; time and memory are real",
        "config": asdict(cfg) | {"gammas": list(cfg.gammas)},
        "environment": _environment(),
        "stages": rows,
        "total_wall_s": sum(s.wall_s for s in stages),
        "projection_hours": projection,
        "projection_note": (
            f"projected, not measured: the measured time per question x {cfg.full_questions} "
            "questions (a full DSEC instruction set, assumed), one GPU, one process, models "
            "loaded once; collect: its question loop; answer: evspec bench's wall time per "
            "request and drafter"
        ),
        "failure": failure,
        "complete": complete,
        "work": str(work),
    }
    (out / "journey.json").write_text(json.dumps(result, indent=1) + "\n")
    lines = [
        f"# The journey on the real layouts ({cfg.size})",
        "",
        f"Random weights: acceptance and answers mean nothing; time and memory are real. "
        f"{result['environment'].get('gpu', 'CPU')}, torch {result['environment'].get('torch')}, "
        f"transformers {result['environment'].get('transformers')}.",
        "",
    ]
    lines += md_table(
        ["stage", "rc", "wall s", "peak RSS GiB", "peak GPU alloc GiB", "questions", "s / 1000 q"],
        [
            [
                s.name, str(s.rc), f"{s.wall_s:.1f}", _gib(s.rss_peak_bytes),
                _gib(s.gpu_max_allocated_bytes), str(s.questions or "–"),
                f"{s.per_1000_s:.0f}" if s.per_1000_s else "–",
            ]
            for s in stages
        ],
    )  # fmt: skip
    lines += [f"Total {result['total_wall_s']:.0f} s. 's / 1000 q' is the stage's wall time "
              "(model loading included) over the questions it handled."]
    for s in stages:
        if s.extra.get("loop_s_per_1000_questions"):
            lines.append(f"* {s.name}: its question loop alone "
                         f"{s.extra['loop_s_per_1000_questions']:.0f} s / 1000 q")
    for drafter, per in answers.items():
        lines.append(f"* bench, {drafter}: {per:.0f} s / 1000 q (mean wall time per answer)")
    if projection:
        lines += ["", f"Projected ({result['projection_note']}):", ""]
        lines += [f"* {k}: {v:.1f} h" for k, v in projection.items()]
    if failure:
        lines += ["", f"**Failed**: {failure}"]
    elif not complete:
        lines += ["", "**Incomplete**: the journey was still running when this was written."]
    lines += ["", "Commands (in order):", "", "```"]
    lines += [" ".join(s.command) for s in stages]
    lines += ["```", ""]
    (out / "journey.md").write_text("\n".join(lines))
    if (work / "logs").is_dir() and (work / "logs").resolve() != (out / "logs").resolve():
        shutil.copytree(work / "logs", out / "logs", dirs_exist_ok=True)
    return result

