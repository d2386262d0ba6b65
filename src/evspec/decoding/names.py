"""Drafter names, importable without torch (the CLI's help text uses them)."""

#: names accepted by ``make_drafter`` and the CLI's ``--drafter``
DRAFTER_NAMES = (
    "none", "eventgpt", "prompt-lookup", "self",
    "eventgpt-adapter", "eventgpt-lora", "event-head", "target-head", "cascade",
    "event-router",
)

#: drafters that run the EventGPT side, so need a draft model (a name may carry "@label")
MODEL_DRAFTERS = ("eventgpt", "eventgpt-adapter", "eventgpt-lora", "event-head", "cascade",
                  "event-router")


def needs_draft_model(name: str) -> bool:
    """Whether drafter ``name`` (``base`` or ``base@label``) runs the EventGPT side."""
    return name.partition("@")[0] in MODEL_DRAFTERS
