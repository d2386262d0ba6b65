"""``pack_world_assets``: what ships inside the package (``evspec/assets/world``).

Layout::

    target/            the world target, fp16 safetensors (Video-LLaVA-7B-hf layout)
    drafter/           the world drafter, fp16 safetensors (EventGPT release layout)
    tokenizer/         the world tokenizer pair ({drafter,target}/tokenizer.json)
    clips/<id>/        a few held-out test clips (events.npz + frames/)
    manifest.json      those clips with their questions and target-style reference answers
    world_extra/test.json   their drafter-style answers and structured truth (for eval)
    README.md          how they were made: the exact commands, seeds and step counts

``evspec demo`` reads this folder; ``evspec world eval --data`` runs on it too.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from evspec.data.manifest import Manifest, load_manifest, save_manifest
from evspec.training.checkpoint import CONFIG_FILE, LOG_FILE, MODEL_DIR, read_json
from evspec.training.world.world_models import checkpoint_bytes, export_fp16

MAX_CLIPS = 10


def _model_dir(path: Path) -> tuple[Path, Path | None]:
    """``(checkpoint folder, run folder or None)`` for a run folder or a checkpoint folder."""
    if (path / MODEL_DIR / "config.json").is_file():
        return path / MODEL_DIR, path
    if (path / "config.json").is_file():
        parent = path.parent
        return path, parent if (parent / CONFIG_FILE).is_file() else None
    raise FileNotFoundError(f"{path} is neither a training run folder (with {MODEL_DIR}/) nor a checkpoint")


def _run_info(run: Path | None) -> dict[str, Any]:
    if run is None:
        return {}
    cfg = read_json(run / CONFIG_FILE)
    info: dict[str, Any] = {"config": cfg}
    if (run / LOG_FILE).is_file():
        log = read_json(run / LOG_FILE)
        info["val"] = log.get("val", [])[-1:] or None
        info["seconds"] = log.get("seconds")
        info["device"] = log.get("device")
    return info


def _world_id(folder: Path) -> Any:
    """What identifies a generated world: its ``world.json`` (seed, clip count, settings),
    else its resolved path."""
    spec = folder / "world.json"
    return json.loads(spec.read_text()) if spec.is_file() else str(folder.resolve())


def check_same_world(data: Path, runs: dict[str, dict[str, Any]]) -> None:
    """Refuse to pack models that were not trained on ``data`` or not in their role: each
    run folder's config names its role and world (a checkpoint folder without its run
    records neither, and is taken as it is)."""
    problems = []
    want = _world_id(data)
    for role, info in runs.items():
        cfg = info.get("config") or {}
        if cfg.get("role") not in (None, role):
            problems.append(f"--{'draft-model' if role == 'drafter' else role} is a {cfg['role']} "
                            f"run, not a {role}")
        trained_on = cfg.get("data")
        if trained_on and Path(trained_on).is_dir() and _world_id(Path(trained_on)) != want:
            problems.append(f"the {role} was trained on {trained_on}, another world than {data}")
        elif trained_on and not Path(trained_on).is_dir():
            problems.append(f"the {role} was trained on {trained_on}, which is gone: the pack "
                            f"cannot check that it is the world in {data}")
    if problems:
        raise ValueError("; ".join(problems) + "; pack models trained on the same --data")


def _generate_command(world: dict[str, Any]) -> str:
    """The ``world generate`` call that reproduces ``world.json`` (non-default options shown)."""
    from evspec.data.world.config import WorldConfig

    cmd = f"evspec world generate --out DATA --clips {world.get('clips')} --seed {world.get('seed')}"
    if "config" in world:
        got, default = WorldConfig.from_dict(world["config"]), WorldConfig()
        options = {
            "--resolution": (got.scene.resolution, default.scene.resolution),
            "--render-hz": (got.render_hz, default.render_hz),
            "--fps": (got.video_fps, default.video_fps),
            "--contrast-threshold": (got.events.contrast_threshold, default.events.contrast_threshold),
            "--noise-hz": (got.events.noise_hz, default.events.noise_hz),
            "--video-format": (got.video_format, default.video_format),
        }
        cmd += "".join(f" {flag} {a}" for flag, (a, b) in options.items() if a != b)
    return cmd


def _train_command(cfg: dict[str, Any]) -> str:
    return (
        f"evspec world train --role {cfg['role']} --data DATA --out RUN_{cfg['role'].upper()} "
        f"--preset {cfg['preset']} --steps {cfg['steps']} --batch-size {cfg['batch_size']} "
        f"--lr {cfg['lr']} --warmup-steps {cfg['warmup_steps']} --seed {cfg['seed']}"
        f" --aux-weight {cfg.get('aux_weight', 0.0)}"
    )


def _readme(world: dict[str, Any], runs: dict[str, dict[str, Any]], clips: list[str],
            sizes: dict[str, int], notes: str) -> str:
    lines = [
        "# Shipped world models and sample clips",
        "",
        "Small Video-LLaVA-architecture target and EventGPT-architecture drafter trained on the",
        "synthetic world (docs/world_training.md), fp16 safetensors, plus held-out test clips.",
        "",
        "## How they were made",
        "",
        "```",
    ]
    if world:
        lines.append(_generate_command(world))
    for role in ("target", "drafter"):
        if runs.get(role, {}).get("config"):
            lines.append(_train_command(runs[role]["config"]))
    lines += [
        "evspec world pack --data DATA --target RUN_TARGET --draft-model RUN_DRAFTER --out ASSETS "
        f"--clips {len(clips)}",
        "```",
        "",
    ]
    for role in ("target", "drafter"):
        info = runs.get(role, {})
        val = (info.get("val") or [None])[0]
        extra = ""
        if val:
            extra = f"; last validation loss {val['loss']:.4f}, greedy exact match {val['exact']:.3f}"
        if info.get("seconds") is not None:
            extra += f"; trained in {info['seconds']:.0f} s on {info.get('device')}"
        lines.append(f"* {role}: {sizes[role] / 1e6:.1f} MB of weights{extra}.")
    lines += ["", f"Clips (held-out test split): {', '.join(clips)}.", ""]
    if notes:
        lines += [notes.strip(), ""]
    return "\n".join(lines)


def pack_world_assets(
    data: str | Path,
    target: str | Path,
    drafter: str | Path,
    out: str | Path,
    *,
    clips: int = 8,
    split: str = "test",
    notes: str = "",
) -> Path:
    """Write the shipped asset folder ``out`` (layout in the module docstring).

    ``target`` / ``drafter``: training run folders (their settings go into the README) or
    checkpoint folders.  ``clips``: how many clips of ``split`` to ship (at most 10).
    """
    from evspec.data.world.generate import EXTRA_DIR, EXTRA_FORMAT, load_world_extra
    from evspec.data.world.tokenizer import save_world_tokenizers
    from evspec.training.world.world_models import world_tokenizers

    data, out = Path(data), Path(out)
    if not 1 <= clips <= MAX_CLIPS:
        raise ValueError(f"pack: clips = {clips}; ship between 1 and {MAX_CLIPS} clips")
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} is not empty; pack into a new folder")
    manifest = load_manifest(data / "manifest.json")
    entries = manifest.split(split)[:clips]
    if not entries:
        raise ValueError(f"{data}: the {split!r} split has no clips to ship")
    extra = load_world_extra(data, split)
    folders, runs, sizes = {}, {}, {}
    for role, src in (("target", Path(target)), ("drafter", Path(drafter))):
        folders[role], run = _model_dir(src)
        runs[role] = _run_info(run)
    check_same_world(data, runs)
    out.mkdir(parents=True, exist_ok=True)

    for role, folder in folders.items():
        export_fp16(folder, out / role)
        sizes[role] = checkpoint_bytes(out / role)
    save_world_tokenizers(out / "tokenizer", world_tokenizers(data))

    shipped = []
    for e in entries:
        for rel in (e.events, e.video):
            if rel is None:
                continue
            src, dst = data / rel, out / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            if src.is_dir():
                shutil.copytree(src, dst)
            else:
                shutil.copy2(src, dst)
        shipped.append(e)
    meta = {**manifest.meta, "shipped_from": split, "clips": len(shipped)}
    meta.pop("world_extra", None)
    meta["world_extra"] = {split: f"{EXTRA_DIR}/{split}.json"}
    save_manifest(out / "manifest.json", Manifest(shipped, out, meta))  # paths stay as they were
    side = {"format": EXTRA_FORMAT, "clips": {e.id: extra[e.id] for e in shipped}}
    (out / EXTRA_DIR).mkdir(exist_ok=True)
    (out / EXTRA_DIR / f"{split}.json").write_text(json.dumps(side, indent=1) + "\n")
    world = json.loads((data / "world.json").read_text()) if (data / "world.json").is_file() else {}
    (out / "README.md").write_text(_readme(world, runs, [e.id for e in shipped], sizes, notes))
    return out
