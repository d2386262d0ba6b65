"""The research note's adapter (§3.1): a linear projection of EventGPT's hidden state into
Video-LLaVA's space plus a *token expander* that predicts several positions at once.

The note wrote ``Linear(4096, 4096)`` then ``Linear(4096, 4 * 4096)`` unflattened to 4
vectors, without saying what the 4 vectors mean.  Here they are made useful: slot ``e``
of position ``j`` is trained toward the target at position ``j + e`` (slot 0 = the next
token, slots 1.. = the tokens after it, Medusa-style).  The ``eventgpt-adapter`` drafter
decodes with slot 0; the other slots are reported by the offline evaluation.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from torch import nn

from evspec.modules.adapter_base import HiddenAdapter, check_sizes, zero_


@dataclass(frozen=True)
class NoteAdapterConfig:
    """``draft_size``: EventGPT width; ``target_size``: Video-LLaVA width; ``expand``:
    slots per position (4 in the note)."""

    draft_size: int
    target_size: int
    expand: int = 4

    def __post_init__(self) -> None:
        check_sizes("NoteAdapterConfig", draft_size=self.draft_size,
                    target_size=self.target_size, expand=self.expand)
        if self.expand > 16:
            raise ValueError(f"NoteAdapterConfig.expand = {self.expand}; use at most 16 slots")

    def to_dict(self) -> dict:
        return asdict(self)


class NoteAdapter(HiddenAdapter):
    kind = "note-adapter"

    def __init__(self, config: NoteAdapterConfig) -> None:
        super().__init__()
        self.config = config
        self.slots = config.expand
        d, t = config.draft_size, config.target_size
        self.embedding_adapter = nn.Linear(d, t)
        if d == t:  # start at "EventGPT's own state"
            nn.init.eye_(self.embedding_adapter.weight)
            nn.init.zeros_(self.embedding_adapter.bias)
        self.token_expander = nn.Linear(t, t * config.expand)
        zero_(self.token_expander)  # every slot starts as the projected state

    def forward(self, draft_hidden, context=None, context_mask=None):
        a = self.embedding_adapter(draft_hidden)  # [B, T, H_t]
        b, t, width = a.shape
        extra = self.token_expander(a).view(b, t, self.slots, width)  # [B, T, E, H_t]
        return a[:, :, None, :] + extra
