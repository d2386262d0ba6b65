"""``evspec bench`` as a Python function: load the models, pick the requests, run the
harness, write the report.  The CLI module only parses arguments into these types."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from evspec.bench.backend import EngineBackend
from evspec.bench.config import TARGET_ONLY, BenchConfig
from evspec.bench.datasets import dataset_items
from evspec.bench.harness import BenchOutcome, run_bench
from evspec.bench.shard import Shard, partition, select_device
from evspec.bench.shard_plan import shard_run_dir, write_bench_plan
from evspec.data.runlock import check_folder_path, holds_run_lock
from evspec.decoding.names import needs_draft_model

_DTYPES = ("auto", "float32", "bfloat16", "float16")


@dataclass(frozen=True)
class ModelSpec:
    """Which models to benchmark.

    ``target``: a Video-LLaVA preset (``tiny-random``, ``7b``) or a local checkpoint folder.
    ``draft_model``: an EventGPT preset or release folder; defaults to the target's preset
    name when the target is a preset and a drafter needs a draft model.  ``dtype``: ``auto``
    = bfloat16 on CUDA, float32 on CPU.  ``device``: ``auto`` = CUDA when available.
    ``seed``: of random preset weights.  ``hf_cache``: ``cache_implementation`` of the HF
    generate baseline (None = the default dynamic cache; ``static`` = compiled).
    ``fast``: both models on evspec's fast engine (static KV cache, CUDA graphs on GPU).
    ``compile``: with ``fast``, ``torch.compile`` the fast engine's layers.
    ``kernels``: with ``fast``, the step layer kernels (``torch`` or ``triton``).
    ``prefix_cache``: reuse each clip's video/event prefix across its questions.
    ``target_device`` / ``draft_device``: place the two models apart (e.g. ``cuda:0`` and
    ``cuda:1``, for the pipelined schedule); None = ``device``.  ``drafter_paths``:
    ``(drafter name, checkpoint folder)`` pairs for the trained drafters (default: the
    modules shipped with the world checkpoints); ``untrained`` for a head = random weights of
    the right shapes, allowed with an acceptance-controlled or -replayed run only.
    """

    target: str = "tiny-random"
    draft_model: str | None = None
    dtype: str = "auto"
    device: str = "auto"
    seed: int = 0
    hf_cache: str | None = None
    fast: bool = False
    compile: bool = False
    kernels: str = "torch"
    prefix_cache: bool = False
    target_device: str | None = None
    draft_device: str | None = None
    drafter_paths: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        from evspec.models.fast.config import check_fast_options

        check_fast_options(self.fast, self.compile, self.kernels)
        if self.dtype not in _DTYPES:
            raise ValueError(f"--dtype must be one of {', '.join(_DTYPES)}, got {self.dtype!r}")
        for name in ("device", "target_device", "draft_device"):
            value = getattr(self, name)
            if value is not None and (not value or value != value.strip()):
                raise ValueError(f"ModelSpec.{name} must be auto, cpu, cuda or cuda:N; got {value!r}")

    @property
    def placement(self) -> tuple[str, str]:
        """(target device, draft device) as given: each defaults to ``device``."""
        return self.target_device or self.device, self.draft_device or self.device


def load_backend(spec: ModelSpec, drafters: tuple[str, ...], *, schedule: str = "sequential",
                 score_sizes: tuple[int, ...] = ()) -> EngineBackend:
    """Load the target (and the draft model when a drafter needs one), each on its device
    (``spec.placement``); ``schedule`` picks the decoding loop (``BenchConfig.schedule``);
    ``score_sizes``: the target's scores of γ + 1 tokens, compiled as they are with
    ``--compile`` (``enable_fast(score_sizes=...)``)."""
    from evspec.models.presets.target import TARGET_PRESETS
    from evspec.session import load_eventgpt, load_target, resolve_device, resolve_dtype

    t_name, d_name = spec.placement
    device = resolve_device(t_name)
    draft_device = resolve_device(d_name)
    dtype = resolve_dtype(spec.dtype, device)
    target = load_target(spec.target, device=device, dtype=dtype, seed=spec.seed)
    draft_name = spec.draft_model
    if draft_name is None and spec.target in TARGET_PRESETS and any(map(needs_draft_model, drafters)):
        draft_name = spec.target
    draft = None
    if draft_name is not None:
        draft = load_eventgpt(draft_name, device=draft_device, dtype=dtype, seed=spec.seed + 1)
    for model in (target, draft):
        if model is not None and spec.fast:
            model.enable_fast(compile=spec.compile, kernels=spec.kernels,
                              score_sizes=score_sizes if model is target else ())
        if model is not None and spec.prefix_cache:
            model.enable_prefix_cache()
    info = {"target_spec": spec.target, "draft_spec": draft_name, "dtype": str(dtype).removeprefix("torch."),
            "fast": spec.fast, "prefix_cache": spec.prefix_cache}
    if spec.fast:  # the numerics contract (absent on the plain engine, which never keeps it)
        info["exact"] = bool(target.numerics["exact"])
    numerics = target.numerics  # what the records' provenance states
    info["numerics"] = ("exact" if numerics["exact"] else "not exact") + (
        f" ({numerics['engine']} engine, {numerics['dtype']})")
    if spec.compile:  # absent when off: older run folders still resume
        info["compile"] = True
    if spec.kernels != "torch":  # likewise
        info["kernels"] = spec.kernels
    if spec.target_device or spec.draft_device:  # absent by default: older run folders still resume
        info["placement"] = {"target": str(device), "draft": str(draft_device)}
    options = drafter_options(spec.drafter_paths)
    if options:  # likewise
        info["drafter_paths"] = dict(spec.drafter_paths)
    return EngineBackend(target, draft, info=info, hf_cache=spec.hf_cache, schedule=schedule,
                         drafter_options=options)


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
    """Request shapes the models expect (used by the random dataset and clip loading)."""
    target, draft = backend.target, getattr(backend, "draft_model", None)
    size = int(getattr(getattr(getattr(target, "config", None), "vision_config", None), "image_size", 224))
    shapes: dict[str, Any] = {"num_frames": int(getattr(target, "num_frames", 8)), "frame_size": size}
    if draft is not None:
        shapes["n_event_images"] = int(getattr(draft, "n_event_images", 5))
        s = int(draft.config.image_size)
        shapes["event_size"] = (s, s)
    return shapes


def _use_device(device: str) -> None:
    """Make ``cuda:N`` the process's current CUDA device (kernels launched without an
    explicit device, and libraries that assume the current one, go there too)."""
    if device.startswith("cuda:"):
        import torch

        from evspec.session import resolve_device

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
) -> BenchOutcome:
    """Run the benchmark described by ``config`` on ``models`` into ``out``; resumable.

    ``backend`` skips model loading (tests, notebooks).  ``report`` builds ``report.md``
    (and plots when matplotlib is installed) at the end, also after an interrupt.

    ``shard`` (see :mod:`evspec.bench.shard`): measure only this shard's requests into
    ``out/shard-{i:05d}-of-{n:05d}``, after writing the shard's plan there; no report is
    built (``evspec merge out`` combines the shards, then reports).  ``models.device ==
    "auto"`` becomes ``cuda:{LOCAL_RANK}`` under torchrun.
    """
    from evspec.decoding.drafters import UNTRAINED

    untrained = [name for name, path in models.drafter_paths if path == UNTRAINED]
    if untrained and not config.forced:
        raise ValueError(f"--drafter-path {untrained[0]}={UNTRAINED} drafts noise: use it with "
                         "--controlled-alpha or --replay (timing at a set acceptance) only")
    unused = [name for name, _ in models.drafter_paths if name not in config.drafters]
    if unused:
        raise ValueError(f"--drafter-path names {unused[0]!r}, which is not in --drafters")
    shard = shard or Shard()
    run_dir = shard_run_dir(out, shard)
    if backend is None:
        models = replace(models, device=select_device(models.device, shard))
        _use_device(models.placement[0])
        backend = load_backend(models, config.drafters, schedule=config.schedule,
                               score_sizes=tuple(g + 1 for g in config.gammas))
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
