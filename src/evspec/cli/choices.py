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
