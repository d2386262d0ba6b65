"""Triton kernels on machines without CUDA: ``TRITON_INTERPRET=1`` is set before anything
imports Triton (``triton.jit`` reads it when a kernel is defined), so the kernel tests run the
kernels' Python on the CPU.  Only tests marked ``triton_kernels`` see it at run time; for the
rest it reads ``0``, so the CPU engine takes its torch paths as it does outside the tests
(the interpreter is slow)."""

from __future__ import annotations

import os

import pytest
import torch

CUDA = torch.cuda.is_available()
if not CUDA:
    os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture(autouse=True)
def _triton_interpreter_only_for_kernel_tests(request, monkeypatch):
    if not CUDA and request.node.get_closest_marker("triton_kernels") is None:
        monkeypatch.setenv("TRITON_INTERPRET", "0")
    yield
