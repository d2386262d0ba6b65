"""Pick the trained modules to ship beside the world checkpoints.

For each drafter (``event-head``, ``target-head``, ``eventgpt-adapter``, ``eventgpt-lora``)
the candidate runs are compared on their *validation* top-1 agreement (never on the test
split, which stays held out for the report), and the winner's ``best/`` checkpoint is
copied to ``OUT/<drafter>/``, where ``make_drafter`` finds it by default
(``evspec/assets/world/heads``).  ``OUT/README.md`` records what was chosen and why.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from evspec.modules.checkpoint import load_checkpoint


def pack_heads(runs: list[Path], out: str | Path, *, notes: str = "") -> dict[str, dict]:
    """Copy the best run per drafter into ``out``; returns drafter -> choice details.
    ``runs`` are run folders written by ``evspec train`` (with ``best/``)."""
    out = Path(out)
    best: dict[str, dict] = {}
    for run in runs:
        folder = Path(run) / "best"
        try:
            ckpt = load_checkpoint(folder)
        except FileNotFoundError:
            continue  # a run that failed before its first evaluation
        score = float(ckpt.meta.get("best", {}).get("top1", ckpt.meta.get("metrics", {}).get("top1", 0.0)))
        cand = {"run": str(run), "kind": ckpt.kind, "val_top1": score, "step": ckpt.meta.get("step"),
                "config": ckpt.config}
        if ckpt.drafter not in best or score > best[ckpt.drafter]["val_top1"]:
            best[ckpt.drafter] = cand
    if not best:
        raise ValueError(f"pack_heads: none of {len(runs)} runs has a best/ checkpoint")
    out.mkdir(parents=True, exist_ok=True)
    for drafter, cand in best.items():
        dst = out / drafter
        if dst.exists():
            shutil.rmtree(dst)
        shutil.copytree(Path(cand["run"]) / "best", dst)
    lines = ["# Trained drafter modules for the world checkpoints", "",
             "Chosen per drafter by validation top-1 agreement (the test split stays held out).",
             "`make_drafter(NAME, ...)` loads `NAME/` from here when no checkpoint is given.", "",
             "| drafter | module | val top-1 | step | from run |", "|---|---|---|---|---|"]
    for drafter, cand in sorted(best.items()):
        lines.append(f"| {drafter} | {cand['kind']} | {cand['val_top1']:.3f} | {cand['step']} | "
                     f"{Path(cand['run']).name} |")
    if notes:
        lines += ["", notes.strip()]
    (out / "README.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (out / "chosen.json").write_text(json.dumps(best, indent=1) + "\n", encoding="utf-8")
    return best
