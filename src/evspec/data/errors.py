"""One error type for bad data: it always names the file, the field and the problem."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

MEMORY = "<in-memory>"


@dataclass(frozen=True)
class Problem:
    """One thing wrong with an input: where (``file``, ``field``) and why (``reason``)."""

    file: str
    field: str
    reason: str

    def __str__(self) -> str:
        return f"{self.file}: {self.field}: {self.reason}"


class DataError(ValueError):
    """Bad input data.  ``str(err)`` reads ``FILE: FIELD: REASON``.

    It subclasses ``ValueError`` so callers that only care "was the input bad" can catch that.
    """

    def __init__(self, file: str | Path | None, field: str, reason: str) -> None:
        self.problem = Problem(str(file) if file is not None else MEMORY, field, reason)
        super().__init__(str(self.problem))

    @property
    def file(self) -> str:
        return self.problem.file

    @property
    def field(self) -> str:
        return self.problem.field

    @property
    def reason(self) -> str:
        return self.problem.reason
