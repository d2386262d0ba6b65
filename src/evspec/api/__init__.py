"""The user's surface above the CLI: :class:`Pipeline` (Python), the HTTP server
(``evspec.api.server``, needs the ``serve`` extra) and batch answers over a manifest."""

from evspec.api.pipeline import Pipeline, PipelineConfig, TokenStream

__all__ = ["Pipeline", "PipelineConfig", "TokenStream"]
