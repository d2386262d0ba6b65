"""evspec: lossless speculative decoding for video LLMs, drafted from the event camera.

Layers (nothing imports upward): ``data`` -> ``models`` -> ``modules`` -> ``decoding``
-> ``training`` -> ``bench`` -> ``cli``.  See the README's architecture section.

``evspec.Pipeline`` (the Python API, :mod:`evspec.api.pipeline`) is imported on first use,
so ``import evspec`` stays light.
"""

__version__ = "0.1.0"

_LAZY = {"Pipeline": "evspec.api.pipeline", "PipelineConfig": "evspec.api.pipeline"}

__all__ = ["Pipeline", "PipelineConfig", "__version__"]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'evspec' has no attribute {name!r}")
