"""Per-round and per-request statistics of one ``generate`` call (DESIGN.md §3)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass
class RoundStats:
    """One speculative round: ``drafted`` = k proposals, ``accepted`` = n kept."""

    drafted: int
    accepted: int
    draft_ms: float = 0.0
    score_ms: float = 0.0


@dataclass
class RequestStats:
    """Per-request figures.

    ``alpha`` = accepted / drafted over the request (the empirical per-token acceptance);
    ``tau`` = new tokens per target forward pass after prefill (mean accepted + 1 per
    round).  Times are wall-clock milliseconds (device-synchronised on GPU).
    ``accepted_hist[i]`` counts rounds that accepted exactly i drafts;
    ``position_accept[i]`` / ``position_drafted[i]`` give per-position acceptance.
    """

    drafter: str
    gamma: int
    new_tokens: int = 0
    rounds: list[RoundStats] = field(default_factory=list)
    target_preprocess_ms: float = 0.0  # pixels -> tensors on the CPU
    target_vision_ms: float = 0.0  # vision tower + projector
    target_prefill_ms: float = 0.0  # LLM prefill
    draft_preprocess_ms: float = 0.0
    draft_vision_ms: float = 0.0
    draft_prefill_ms: float = 0.0
    ttft_ms: float = 0.0
    total_ms: float = 0.0
    stop_reason: str = ""  # "eos" | "max_new_tokens" | "context"

    def record_draft_begin(self, drafter: object) -> None:
        """Copy a drafter's begin-of-request stage times (its ``timings``) into the stats."""
        timings = getattr(drafter, "timings", {})
        self.draft_preprocess_ms = timings.get("preprocess_ms", 0.0)
        self.draft_vision_ms = timings.get("vision_ms", 0.0)
        self.draft_prefill_ms = timings.get("prefill_ms", 0.0)

    @property
    def drafted(self) -> int:
        return sum(r.drafted for r in self.rounds)

    @property
    def accepted(self) -> int:
        return sum(r.accepted for r in self.rounds)

    @property
    def alpha(self) -> float:
        d = self.drafted
        return self.accepted / d if d else 0.0

    @property
    def tau(self) -> float:
        n = len(self.rounds)
        return (self.accepted + n) / n if n else 0.0

    @property
    def accepted_hist(self) -> list[int]:
        hist = [0] * (max((r.drafted for r in self.rounds), default=0) + 1)
        for r in self.rounds:
            hist[r.accepted] += 1
        return hist

    def position_counts(self) -> tuple[list[int], list[int]]:
        """``(accepted[i], drafted[i])`` for draft position i (0-based) over all rounds."""
        width = max((r.drafted for r in self.rounds), default=0)
        acc, dra = [0] * width, [0] * width
        for r in self.rounds:
            for i in range(r.drafted):
                dra[i] += 1
                if i < r.accepted:
                    acc[i] += 1
        return acc, dra

    @property
    def decode_ms(self) -> float:
        return sum(r.draft_ms + r.score_ms for r in self.rounds)

    def to_dict(self) -> dict:
        out = asdict(self)
        acc, dra = self.position_counts()
        out.update(
            alpha=self.alpha,
            tau=self.tau,
            drafted=self.drafted,
            accepted=self.accepted,
            accepted_hist=self.accepted_hist,
            position_accepted=acc,
            position_drafted=dra,
        )
        return out


@dataclass
class Result:
    """What ``generate`` returns: answer token ids (first token included, EOS included when
    produced), the decoded text, and the statistics."""

    tokens: list[int]
    text: str
    stats: RequestStats

    def to_dict(self) -> dict:
        return {"tokens": self.tokens, "text": self.text, "stats": self.stats.to_dict()}
