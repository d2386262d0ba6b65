"""Where compiled artifacts live between processes.

``torch.compile`` (inductor's FX graph cache and AOTAutograd cache) and Triton (compiled
kernels, ours and inductor's) keep their work on disk, so a second process with the same
models and shapes skips codegen and kernel compilation; it still traces the model with
Dynamo and captures CUDA graphs.  :func:`enable_compile_cache` points both caches at one
folder that survives reboots (``$EVSPEC_CACHE_DIR``, else ``$XDG_CACHE_HOME/evspec`` or
``~/.cache/evspec``) unless the user already chose one with ``TORCHINDUCTOR_CACHE_DIR`` /
``TRITON_CACHE_DIR``.  Call it before the first compilation; nothing happens at import.
"""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "EVSPEC_CACHE_DIR"


def default_cache_root() -> Path:
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "evspec"


def enable_compile_cache(root: str | os.PathLike | None = None) -> dict[str, str]:
    """Turn on the on-disk compile caches under ``root`` (default :func:`default_cache_root`)
    and return the folders in force: ``{"inductor": ..., "triton": ...}``.  Variables the
    user set win over ``root``."""
    import torch._functorch.config as functorch_config
    import torch._inductor.config as inductor_config

    base = Path(root) if root is not None else default_cache_root()
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(base / "inductor"))
    os.environ.setdefault("TRITON_CACHE_DIR", str(base / "triton"))
    for key in ("TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR"):
        Path(os.environ[key]).mkdir(parents=True, exist_ok=True)
    inductor_config.fx_graph_cache = True
    functorch_config.enable_autograd_cache = True
    return {"inductor": os.environ["TORCHINDUCTOR_CACHE_DIR"],
            "triton": os.environ["TRITON_CACHE_DIR"]}
