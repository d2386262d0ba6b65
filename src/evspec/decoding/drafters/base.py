"""Helpers shared by drafters."""

from __future__ import annotations

import torch

from evspec.decoding.protocols import Draft


def empty_draft(device: torch.device | str = "cpu") -> Draft:
    return Draft(tokens=torch.zeros(0, dtype=torch.long, device=device), probs=None)


class DrafterError(ValueError):
    """A drafter cannot serve this request (missing input, incompatible vocabulary)."""
