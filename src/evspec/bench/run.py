"""``evspec bench`` as a Python function: load the models, pick the requests, run the
harness, write the report.  The CLI module only parses arguments into these types."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from evspec.bench.backend import EngineBackend
from evspec.bench.config import TARGET_ONLY, BenchConfig
from evspec.bench.datasets import dataset_items
from evspec.bench.harness import BenchOutcome, run_bench
from evspec.bench.shard import Shard, partition, select_device
from evspec.bench.shard_plan import shard_run_dir, write_bench_plan
from evspec.data.runlock import check_folder_path, holds_run_lock
from evspec.loading import ClipSizes, ModelSpec


def load_backend(spec: ModelSpec, drafters: tuple[str, ...], *, schedule: str = "sequential",
                 score_sizes: tuple[int, ...] = (), hf_cache: str | None = None,
                 drafter_paths: tuple[tuple[str, str], ...] = ()) -> EngineBackend:
    """Load the models of ``spec`` (the draft model too when a drafter needs one:
    :meth:`ModelSpec.for_drafters`) through :func:`evspec.loading.load_models`; ``schedule``
    picks the decoding loop (``BenchConfig.schedule``); ``score_sizes``: the target's scores
    of γ + 1 tokens, compiled as they are with ``compile``.  ``hf_cache``:
    ``cache_implementation`` of the HF generate baseline (None = the default dynamic cache;
    ``static`` = compiled).  ``drafter_paths``: ``(drafter name, checkpoint folder)`` pairs
    for the trained drafters (default: the modules shipped with the world checkpoints);
    ``untrained`` for a head = random weights of the right shapes, allowed with an
    acceptance-controlled or -replayed run only."""
    from evspec.loading import load_models

    options = drafter_options(drafter_paths)
    spec = spec.for_drafters(drafters)
    loaded = load_models(spec, score_sizes=score_sizes)
    info = {"target_spec": spec.target, "draft_spec": spec.draft_model,
            "dtype": str(loaded.dtype).removeprefix("torch."), "fast": spec.fast,
            "prefix_cache": spec.prefix_cache}
    if spec.fast:  # the numerics contract (absent on the plain engine, which never keeps it)
        info["exact"] = bool(loaded.target.numerics["exact"])
    numerics = loaded.target.numerics  # what the records' provenance states
    info["numerics"] = ("exact" if numerics["exact"] else "not exact") + (
        f" ({numerics['engine']} engine, {numerics['dtype']})")
    if spec.compile:  # absent when off: older run folders still resume
        info["compile"] = True
    if spec.kernels != "torch":  # likewise
        info["kernels"] = spec.kernels
    if spec.target_device or spec.draft_device:  # absent by default: older run folders still resume
        info["placement"] = {"target": str(loaded.device), "draft": str(loaded.draft_device)}
    if options:  # likewise
        info["drafter_paths"] = dict(drafter_paths)
    return EngineBackend(loaded.target, loaded.draft, info=info, hf_cache=hf_cache,
                         schedule=schedule, drafter_options=options)


def drafter_options(paths: tuple[tuple[str, str], ...]) -> dict[str, dict[str, Any]]:
    """``make_drafter`` options per drafter name from ``(name, folder)`` pairs."""
    from evspec.decoding.drafters import UNTRAINED, checkpoint_option

    out: dict[str, dict[str, Any]] = {}
    for name, path in paths:
        if name in out:
            raise ValueError(f"--drafter-path names {name!r} twice")
        if path != UNTRAINED and not Path(path).is_dir():
            raise FileNotFoundError(f"--drafter-path {name}={path}: no such checkpoint folder")
        out[name] = {checkpoint_option(name): path}
    return out


def _shapes(backend: EngineBackend) -> dict[str, Any]:
    """Request shapes the models expect (used by the random dataset and clip loading); a
    stand-in backend without model configs (tests) gets the default sizes."""
    target, draft = backend.target, getattr(backend, "draft_model", None)
    sizes = ClipSizes.of(target, draft) if hasattr(target, "num_frames") else ClipSizes()
    return {"num_frames": sizes.num_frames, "frame_size": sizes.frame_size,
            "n_event_images": sizes.n_event_images,
            "event_size": (sizes.event_size, sizes.event_size)}


def _use_device(device: str) -> None:
    """Make ``cuda:N`` the process's current CUDA device (kernels launched without an
    explicit device, and libraries that assume the current one, go there too)."""
    if device.startswith("cuda:"):
        import torch

        from evspec.loading import resolve_device

        torch.cuda.set_device(resolve_device(device))


def _locked_folder(args: dict[str, Any]) -> Path:
    """The folder a bench call writes (its shard's under ``out``), checked before any model
    loads: ``--out`` must not be a file."""
    out = Path(args["out"])
    check_folder_path(out)
    return shard_run_dir(out, args["shard"] or Shard())


@holds_run_lock("bench", _locked_folder)
def bench(
    config: BenchConfig,
    out: Path,
    models: ModelSpec,
    *,
    limit: int | None = None,
    split: str | None = "test",
    report: bool = True,
    progress: bool = True,
    argv: list[str] | None = None,
    backend: EngineBackend | None = None,
    shard: Shard | None = None,
    hf_cache: str | None = None,
    drafter_paths: tuple[tuple[str, str], ...] = (),
) -> BenchOutcome:
    """Run the benchmark described by ``config`` on ``models`` into ``out``; resumable.

    ``backend`` skips model loading (tests, notebooks); ``hf_cache`` and ``drafter_paths``
    are :func:`load_backend`'s.  ``report`` builds ``report.md``
    (and plots when matplotlib is installed) at the end, also after an interrupt.

    ``shard`` (see :mod:`evspec.bench.shard`): measure only this shard's requests into
    ``out/shard-{i:05d}-of-{n:05d}``, after writing the shard's plan there; no report is
    built (``evspec merge out`` combines the shards, then reports).  ``models.device ==
    "auto"`` becomes ``cuda:{LOCAL_RANK}`` under torchrun.
    """
    from evspec.decoding.drafters import UNTRAINED

    untrained = [name for name, path in drafter_paths if path == UNTRAINED]
    if untrained and not config.forced:
        raise ValueError(f"--drafter-path {untrained[0]}={UNTRAINED} drafts noise: use it with "
                         "--controlled-alpha or --replay (timing at a set acceptance) only")
    unused = [name for name, _ in drafter_paths if name not in config.drafters]
    if unused:
        raise ValueError(f"--drafter-path names {unused[0]!r}, which is not in --drafters")
    shard = shard or Shard()
    run_dir = shard_run_dir(out, shard)
    if backend is None:
        models = replace(models, device=select_device(models.device, shard))
        _use_device(models.placement[0])
        backend = load_backend(models, config.drafters, schedule=config.schedule,
                               score_sizes=tuple(g + 1 for g in config.gammas),
                               hf_cache=hf_cache, drafter_paths=drafter_paths)
    elif getattr(backend, "schedule", "sequential") != config.schedule:
        raise ValueError(
            f"bench: the config asks for the {config.schedule!r} schedule but the given backend runs "
            f"{getattr(backend, 'schedule', 'sequential')!r}; build it with schedule={config.schedule!r}"
        )
    for name in config.drafters:  # fail fast on a drafter that cannot exist at all
        if name != TARGET_ONLY:
            backend.make_drafter(name)
    shapes = _shapes(backend)
    items = dataset_items(config.dataset, limit=limit, seed=config.seed, split=split, **shapes)
    env_extra = None
    if shard.sharded:
        # positions in the whole run keep per-request random streams identical to one process
        items = [replace(it, meta={**it.meta, "position": i}) for i, it in enumerate(items)]
        mine = partition(items, shard)
        identity = {"settings": config.identity(), "backend": backend.describe(), "label": config.label}
        write_bench_plan(run_dir, shard, [it.request_id for it in items], [it.request_id for it in mine],
                         identity, config.plan())
        items, env_extra = mine, {"shard": shard.describe()}
    outcome = run_bench(
        config, items, backend, run_dir, argv=argv, progress=progress, env_extra=env_extra,
        allow_empty=shard.sharded, tag=f"{shard.index + 1}/{shard.count}" if shard.sharded else None,
    )
    if report and not shard.sharded and (outcome.written or outcome.skipped):
        from evspec.bench.report import build_report

        try:
            import matplotlib  # noqa: F401

            plots = True
        except ImportError:
            plots = False
        build_report(run_dir, plots=plots)
    return outcome
