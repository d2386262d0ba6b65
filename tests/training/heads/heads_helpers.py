"""Shared constants and builders of the adapter/head tests (imported by conftest and tests)."""

from __future__ import annotations

MAX_NEW = 10  # answer cap of the collected micro data
TRAIN_STEPS = 40  # steps of the session's trained modules


def train_config(kind: str, steps: int = TRAIN_STEPS):
    """The tests' training settings (small batches, a high learning rate; LoRA, whose steps
    run EventGPT over whole prompts, fewer and smaller)."""
    from evspec.training.heads.train import TrainConfig
    from evspec.modules.options import ModuleOptions

    if kind == "lora":
        return TrainConfig(kind=kind, steps=min(steps, 24), batch_size=4, lr=5e-3, warmup_steps=3,
                           eval_every=24, save_every=24, eval_limit=4, options=ModuleOptions(rank=8))
    return TrainConfig(kind=kind, steps=steps, batch_size=8, lr=3e-3, warmup_steps=5, eval_every=20,
                       save_every=20, depth=2, eval_limit=8)


def fresh_target():
    """The tiny random Video-LLaVA (seed 0): the target every test uses."""
    from evspec.models.target import VideoLlavaTarget

    return VideoLlavaTarget.from_preset("tiny-random", seed=0)


def fresh_eventgpt():
    """A new tiny random EventGPT (seed 1); LoRA training modifies the one it is given."""
    from evspec.models.eventgpt import EventGPT

    return EventGPT.from_preset("tiny-random", seed=1)
