"""Typed choices for the CLI's options, importable without torch, so a bad value is refused
(with the list of good ones) before any model code is imported."""

from __future__ import annotations

from enum import Enum

from evspec.decoding.names import DRAFTER_NAMES

#: ``--drafter`` (a strategy name)
Drafter = Enum("Drafter", {name: name for name in DRAFTER_NAMES}, type=str)


class GammaPolicy(str, Enum):
    fixed = "fixed"
    dynamic = "dynamic"


class Schedule(str, Enum):
    sequential = "sequential"
    pipelined = "pipelined"


class Kernels(str, Enum):
    torch = "torch"
    triton = "triton"


class Quant(str, Enum):
    none = "none"
    four_bit = "4bit"


class DType(str, Enum):
    auto = "auto"
    float32 = "float32"
    bfloat16 = "bfloat16"
    float16 = "float16"
    fp32 = "fp32"
    bf16 = "bf16"
    fp16 = "fp16"


def parse_gammas(text: str) -> tuple[int, ...]:
    """``--gamma 1,2,4`` -> ``(1, 2, 4)``: one or more γ ≥ 1, comma-separated."""
    try:
        values = tuple(int(x) for x in str(text).split(",") if x.strip())
    except ValueError:
        raise ValueError(f"--gamma {text!r}: give γ values as integers, e.g. 4 or 1,2,4") from None
    if not values or min(values) < 1:
        raise ValueError(f"--gamma {text!r}: every γ must be >= 1")
    return values


def given(ctx) -> set[str]:
    """The parameters of a click/typer context set on the command line (not defaults)."""
    def source(name: str) -> str:
        return getattr(ctx.get_parameter_source(name), "name", "")

    return {name for name in ctx.params if source(name) == "COMMANDLINE"}


class Module(str, Enum):
    """``evspec train --module`` (``evspec.modules.checkpoint.MODULE_KINDS``)."""

    note_adapter = "note-adapter"
    bottleneck = "bottleneck"
    attention = "attention"
    aligner = "aligner"
    lora = "lora"
    event_head = "event-head"
    target_head = "target-head"


class Memory(str, Enum):
    events = "events"
    prefill = "prefill"


class Canvas(str, Enum):
    auto = "auto"
    sensor = "sensor"
    chunk = "chunk"
    data = "data"


class StoreDType(str, Enum):
    bfloat16 = "bfloat16"
    float16 = "float16"
    float32 = "float32"


class Role(str, Enum):
    target = "target"
    drafter = "drafter"


class Amp(str, Enum):
    auto = "auto"
    bf16 = "bf16"
    off = "off"

