"""Named model shapes (data tables): ``target`` for Video-LLaVA, ``eventgpt`` for EventGPT.

Import the table you need from its module, e.g.
``from evspec.models.presets.target import TARGET_PRESETS``.
"""
