"""Drafter names, importable without torch (the CLI's help text uses them)."""

#: names accepted by ``make_drafter`` and the CLI's ``--drafter``
DRAFTER_NAMES = (
    "none", "eventgpt", "prompt-lookup", "self",
    "eventgpt-adapter", "eventgpt-lora", "event-head", "target-head", "cascade",
)
