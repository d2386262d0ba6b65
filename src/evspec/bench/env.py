"""The environment a benchmark ran in, recorded once per run session (DESIGN.md §5).

GPU, dtype, library versions, git revision and command line travel with every result so
that a number can always be traced to the hardware and code that produced it.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

_LIBRARIES = (
    "evspec", "torch", "transformers", "triton", "numpy", "safetensors", "tokenizers", "accelerate",
)


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        if dist == "evspec":  # running from a source tree (PYTHONPATH=src), not installed
            import evspec

            return f"{evspec.__version__} (source tree)"
        return None


def git_revision(path: Path | None = None) -> dict[str, Any]:
    """``{"commit": sha | None, "dirty": bool | None}`` of the repository holding ``path``
    (default: this package's source).  Both None outside a git checkout or without git."""
    where = Path(path) if path is not None else Path(__file__).resolve().parent
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=10
        )
        if sha.returncode != 0:
            return {"commit": None, "dirty": None}
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=where, capture_output=True, text=True, timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
    dirty = bool(status.stdout.strip()) if status.returncode == 0 else None
    return {"commit": sha.stdout.strip(), "dirty": dirty}


def device_info() -> dict[str, Any]:
    """Accelerator facts: CUDA device names, memory, capability, driver-side versions.

    Read from torch only when it is already loaded (it is whenever a model ran): capturing
    the environment should not cost a torch import of its own.
    """
    torch = sys.modules.get("torch")
    if torch is None:
        return {"cuda_available": None, "note": "torch not loaded by this run"}
    info: dict[str, Any] = {
        "cuda_available": torch.cuda.is_available(),
        "torch_cuda": torch.version.cuda,
        "cpu_threads": torch.get_num_threads(),
    }
    if torch.cuda.is_available():
        gpus = []
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            gpus.append(
                {
                    "name": p.name,
                    "memory_gib": round(p.total_memory / 2**30, 1),
                    "capability": f"{p.major}.{p.minor}",
                }
            )
        info["gpus"] = gpus
        info["cudnn"] = torch.backends.cudnn.version()
        info["driver"] = gpu_driver()
    return info


def gpu_driver() -> str | None:
    """The NVIDIA driver version (``nvidia-smi``), or None where it cannot be read."""
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=20,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    lines = out.stdout.strip().splitlines() if out.returncode == 0 else []
    return lines[0].strip() if lines else None


def hardware(env: dict[str, Any]) -> str:
    """The hardware a session ran on, as one string: the GPU names and driver, else the CPU."""
    dev = env.get("device", {}) or {}
    names = sorted({g.get("name", "?") for g in dev.get("gpus", []) or []})
    if names:
        driver = dev.get("driver")
        return ", ".join(names) + (f" (driver {driver})" if driver else "")
    return f"CPU ({env.get('platform', '?')})"


def provenance(env: dict[str, Any], backend: dict[str, Any]) -> dict[str, Any]:
    """The facts every record carries (DESIGN.md §5), from a session's environment and the
    backend's description: hardware, library versions, commit and dirty flag, dtype,
    engine and numerics (``exact`` where the engine keeps the numerics contract, else the
    backend's own word, else None = not stated)."""
    libs = env.get("libraries", {}) or {}
    git = env.get("git", {}) or {}
    engine = "fast" if backend.get("fast") else "default"
    if backend.get("compile"):
        engine += "+compile"
    if backend.get("kernels"):
        engine += f"+{backend['kernels']}"
    return {
        "hardware": hardware(env),
        "torch": libs.get("torch"),
        "transformers": libs.get("transformers"),
        "triton": libs.get("triton"),
        "commit": git.get("commit"),
        "dirty": git.get("dirty"),
        "dtype": backend.get("dtype"),
        "engine": engine,
        "numerics": backend.get("numerics"),
    }


def capture_environment(
    argv: list[str] | None = None, *, extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Everything needed to reproduce a number: time, host, Python, library versions,
    git revision, accelerator, the command line and ``extra`` (e.g. dtype, device, preset)."""
    env: dict[str, Any] = {
        "time": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "hostname": platform.node(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "libraries": {name: _version(name) for name in _LIBRARIES},
        "git": git_revision(),
        "device": device_info(),
        "command": list(sys.argv if argv is None else argv),
        "cwd": os.getcwd(),
    }
    if extra:
        env.update(extra)
    return env
