"""Devices, dtypes, quantisation and CPU threads as the loader resolves them: each check
says what to pass instead."""

from __future__ import annotations

import os
import re
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch loads with the first model, not with this module
    import torch

#: dtype names (with their short forms) -> the torch dtype's attribute name
_DTYPES = {"float32": "float32", "fp32": "float32", "bfloat16": "bfloat16", "bf16": "bfloat16",
           "float16": "float16", "fp16": "float16"}
DTYPE_CHOICES = ("auto", *_DTYPES)
QUANT_CHOICES = ("none", "4bit")
_DEVICE = re.compile(r"(cpu|meta|mps|cuda(:\d+)?)")


def check_device(device: str, option: str = "--device") -> None:
    """Refuse a string that names no device, saying what to pass instead."""
    if not isinstance(device, str) or (device != "auto" and not _DEVICE.fullmatch(device)):
        raise ValueError(f"{option} {device!r}: not a device: use auto, cpu, cuda or cuda:N")


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto`` (CUDA when available), ``cpu``, ``cuda`` or ``cuda:N``; anything else, or a
    GPU this machine lacks, is a ValueError saying what to pass instead."""
    import torch

    if isinstance(device, torch.device):
        return device
    check_device(device)
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available; use --device cpu")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        n = torch.cuda.device_count()
        raise ValueError(f"--device {device!r}: this machine has {n} GPU(s), "
                         f"cuda:0 .. cuda:{n - 1}")
    return dev


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """``auto`` = bfloat16 on CUDA, float32 elsewhere; else the named dtype."""
    import torch

    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if dtype not in _DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; choose auto, {', '.join(_DTYPES)}")
    return getattr(torch, _DTYPES[dtype])


def check_quant_name(quant: str) -> None:
    if quant not in QUANT_CHOICES:
        raise ValueError(
            f"quant {quant!r} is not supported; choose one of {', '.join(QUANT_CHOICES)} "
            "(4bit = bitsandbytes NF4 weights for the LLaMA decoder, needs "
            "`pip install 'evspec[quant]'`)"
        )


def check_quant(quant: str, dtype: torch.dtype) -> None:
    """Validate a ``quant`` choice (and, for ``4bit``, that bitsandbytes is installed)
    before any model is built."""
    check_quant_name(quant)
    if quant == "4bit":
        if not dtype.is_floating_point:
            raise ValueError("quant='4bit' computes in the model dtype, which must be "
                             f"floating; got {dtype}")
        from evspec.models.quant import import_bitsandbytes

        import_bitsandbytes()  # fail before a 7B model is built, saying how to install it


def default_threads(device: torch.device, cores: int | None = None) -> int | None:
    """CPU threads for torch on ``device``: 1 on a CPU with at most 2 cores (the small models'
    narrow linears run ~100x slower when two OpenMP threads contend for two shared cores),
    else ``None`` (torch's own choice)."""
    cores = os.cpu_count() if cores is None else cores
    if device.type == "cpu" and cores is not None and cores <= 2:
        return 1
    return None


def apply_threads(threads: int | None, device: torch.device) -> int:
    """Set torch's CPU thread count: ``threads``, else :func:`default_threads`; returns the
    count in force."""
    import torch

    if threads is not None and threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    n = threads if threads is not None else default_threads(device)
    if n is not None and n != torch.get_num_threads():
        torch.set_num_threads(n)
    return torch.get_num_threads()


@contextmanager
def quiet_loading():
    """Hide transformers' "Loading weights" progress bar while a model loads (restored
    after)."""
    from transformers.utils import logging as hf_logging

    was = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was:
            hf_logging.enable_progress_bar()
