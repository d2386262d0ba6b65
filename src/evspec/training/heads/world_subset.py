"""A subset of a synthetic world, with the *same* splits as the full world.

The world models were trained on ``world generate --clips N --seed S``; which clips are
held out depends on ``(N, S)``.  Collecting and evaluating heads needs only a few thousand
training questions and a few hundred held-out ones, so instead of regenerating all ``N``
clips this writes the first ``k`` clips of each split of that exact world (each clip
depends only on ``(S, index)``, so they are byte-identical to the full world's).
"""

from __future__ import annotations

import multiprocessing
from dataclasses import dataclass
from pathlib import Path

from evspec.data.manifest import QA, ClipEntry, Manifest, save_manifest


@dataclass(frozen=True)
class SubsetReport:
    manifest: Path
    counts: dict[str, int]


def _write(args: tuple[str, int, int, object]) -> tuple[int, str, str, list[dict]]:
    from evspec.data.world.clip import make_clip
    from evspec.data.world.generate import write_clip

    out, seed, index, cfg = args
    rec = write_clip(Path(out), make_clip(seed, index, cfg), cfg)  # type: ignore[arg-type]
    return rec.index, rec.events, rec.video, rec.questions


def _spawn_safe() -> bool:
    """Spawned workers re-import ``__main__``; that fails for code read from stdin."""
    import sys

    main_file = getattr(sys.modules.get("__main__"), "__file__", None)
    return main_file is None or Path(main_file).is_file()


def write_world_subset(
    out: str | Path,
    *,
    clips: int,
    seed: int,
    per_split: dict[str, int],
    workers: int = 1,
    resolution: int | None = None,
) -> SubsetReport:
    """Write the first ``per_split[s]`` clips of each split ``s`` of the world
    ``(clips, seed)`` (default :class:`WorldConfig`, or ``resolution`` px) to ``out``."""
    from evspec.data.world.clip import clip_id
    from evspec.data.world.config import WorldConfig
    from evspec.data.world.scene import SceneConfig
    from evspec.data.world.splits import assign_splits

    if clips < 3:
        raise ValueError(f"write_world_subset: clips = {clips}; the world needs at least 3 clips")
    bad = [k for k in per_split if k not in ("train", "val", "test")]
    if bad or any(v < 0 for v in per_split.values()):
        raise ValueError(f"write_world_subset: per_split {per_split}: keys train/val/test, counts >= 0")
    cfg = WorldConfig() if resolution is None else WorldConfig(scene=SceneConfig(resolution=resolution))
    splits = assign_splits(clips, seed, cfg.split_fractions)
    chosen: list[int] = []
    for name, k in per_split.items():
        chosen += [i for i, s in enumerate(splits) if s == name][:k]
    chosen.sort()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    jobs = [(str(out), seed, i, cfg) for i in chosen]
    if workers > 1 and len(jobs) > 1 and _spawn_safe():
        with multiprocessing.get_context("spawn").Pool(min(workers, len(jobs))) as pool:
            done = pool.map(_write, jobs, chunksize=max(1, len(jobs) // (workers * 8)))
    else:
        done = [_write(j) for j in jobs]
    entries = []
    for index, events, video, questions in sorted(done):
        qas = [QA(q["question"], q["answer"], q["qtype"]) for q in questions]
        entries.append(ClipEntry(clip_id(index), events, video, None, splits[index], qas))
    meta = {"source": "evspec synthetic world (subset)", "world_clips": clips, "seed": seed,
            "per_split": per_split, "sensor_size": [cfg.scene.resolution] * 2}
    path = out / "manifest.json"
    save_manifest(path, Manifest(entries, out, meta))
    counts = {name: sum(1 for e in entries if e.split == name) for name in ("train", "val", "test")}
    return SubsetReport(path, counts)


def main(argv: list[str] | None = None) -> None:
    """``python -m evspec.training.heads.world_subset --out DIR --clips N --seed S --train K
    --val K --test K [--workers W] [--resolution PX]`` (used by benchmarks/heads_gpu.sh)."""
    import argparse
    import os

    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("--out", required=True)
    ap.add_argument("--clips", type=int, required=True, help="clip count of the full world")
    ap.add_argument("--seed", type=int, required=True, help="seed of the full world")
    for split in ("train", "val", "test"):
        ap.add_argument(f"--{split}", type=int, default=0, help=f"first K clips of the {split} split")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--resolution", type=int, default=None)
    a = ap.parse_args(argv)
    report = write_world_subset(a.out, clips=a.clips, seed=a.seed, workers=a.workers, resolution=a.resolution,
                                per_split={"train": a.train, "val": a.val, "test": a.test})
    print(f"world subset {report.counts} -> {report.manifest}")


if __name__ == "__main__":
    main()
