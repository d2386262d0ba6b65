"""Model wrappers: the Video-LLaVA target, our EventGPT, and their presets."""

from evspec.models.request import Request

__all__ = ["Request"]
