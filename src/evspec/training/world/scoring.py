"""Scoring world answers: exact match and field-level match against the structured truth.

:func:`extract_facts` reads the facts a world answer states, in either answer style, by
scanning the world's fixed vocabulary (``data.world.tables``): the objects mentioned
(colour, shape, motion), the direction, speed, number and colour words.  Each question
type has one *key* (what the question asks) compared with the generator's ground-truth
``fields``:

===========  ====================================  =======================================
qtype        key (field-level match)               event-visible part (what events show)
===========  ====================================  =======================================
describe     all objects as (colour, shape, motion)  moving objects as (shape, motion)
moving       moving objects as (colour, shape)      moving shapes
direction    direction                              direction
speed        speed                                  speed
colour       colour                                 -- (events carry no colour)
count        number of objects                      number of moving objects
shape        shape                                  shape
===========  ====================================  =======================================

Lists are compared as multisets: the generator lists objects in scene order, which no
model can see, so a correct answer may name them in another order.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

from evspec.data.world.tables import (
    COLOUR_HUES,
    DIRECTIONS,
    NUMBER_WORDS,
    SHAPES,
    SPEEDS,
    TARGET_DIRECTION,
    TARGET_SPEED,
)

_COLOURS = set(COLOUR_HUES)
_SHAPES = set(SHAPES)
_NUMBERS = {w: i for i, w in enumerate(NUMBER_WORDS)}
_SPEED_WORDS = {**{s: s for s in SPEEDS}, **{v: k for k, v in TARGET_SPEED.items()}}
# direction phrases, longest first ("up and to the left" before "left"), as word tuples
_DIRECTION_PHRASES = sorted(
    [(tuple(v.split()), k) for k, v in TARGET_DIRECTION.items()]
    + [((k,), k) for k in DIRECTIONS],
    key=lambda item: -len(item[0]),
)
_WORD = re.compile(r"[a-z]+(?:-[a-z]+)*")


@dataclass
class MentionedObject:
    shape: str
    colour: str | None = None
    motion: str | None = None  # a direction, "static", or None when not said


@dataclass
class Facts:
    """What one answer states."""

    objects: list[MentionedObject] = field(default_factory=list)
    colours: list[str] = field(default_factory=list)  # every colour word, in order
    direction: str | None = None  # the first direction stated
    speed: str | None = None
    number: int | None = None
    nothing: bool = False  # "nothing is moving"


def extract_facts(text: str) -> Facts:
    """The facts ``text`` states (either answer style)."""
    words = _WORD.findall(text.lower())
    facts = Facts()
    colour: str | None = None
    current: MentionedObject | None = None
    i = 0
    while i < len(words):
        w = words[i]
        matched = next(
            (d for phrase, d in _DIRECTION_PHRASES if tuple(words[i : i + len(phrase)]) == phrase),
            None,
        )
        if matched is not None:
            length = next(len(p) for p, d in _DIRECTION_PHRASES if d == matched
                          and tuple(words[i : i + len(p)]) == p)
            facts.direction = facts.direction or matched
            if current is not None and current.motion is None:
                current.motion = matched
            i += length
            continue
        if w in _COLOURS:
            facts.colours.append(w)
            colour = w
        elif w in _SHAPES:
            current = MentionedObject(w, colour)
            facts.objects.append(current)
            colour = None
        elif w == "still" and current is not None and current.motion is None:
            current.motion = "static"
        elif w in _SPEED_WORDS:
            facts.speed = facts.speed or _SPEED_WORDS[w]
        elif w == "nothing":
            facts.nothing = True
            facts.number = 0 if facts.number is None else facts.number
        elif w in _NUMBERS and facts.number is None:  # "no objects are moving" -> 0
            facts.number = _NUMBERS[w]
        i += 1
    return facts


def _csv(value: str | None) -> list[str]:
    return [v for v in (value or "").split(",") if v]


def truth_key(qtype: str, fields: dict[str, str]) -> object:
    """The ground-truth key of a question from the generator's ``fields``."""
    if qtype == "describe":
        triples = zip(_csv(fields["colours"]), _csv(fields["shapes"]), _csv(fields["motions"]))
        return Counter(triples)
    if qtype == "moving":
        return Counter(zip(_csv(fields["colours"]), _csv(fields["moving"])))
    if qtype == "count":
        return int(fields["count"])
    if qtype in ("direction", "speed", "colour", "shape"):
        return fields[qtype]
    raise ValueError(f"unknown question type {qtype!r}")


def answer_key(qtype: str, facts: Facts) -> object:
    """The same key read from an answer's facts."""
    if qtype == "describe":
        return Counter((o.colour, o.shape, o.motion) for o in facts.objects)
    if qtype == "moving":
        return Counter() if facts.nothing else Counter((o.colour, o.shape) for o in facts.objects)
    if qtype == "count":
        return facts.number
    if qtype == "direction":
        return facts.direction
    if qtype == "speed":
        return facts.speed
    if qtype == "colour":
        return facts.colours[0] if facts.colours else None
    if qtype == "shape":
        return facts.objects[-1].shape if facts.objects else None
    raise ValueError(f"unknown question type {qtype!r}")


def visible_truth(qtype: str, fields: dict[str, str]) -> object | None:
    """The event-visible part of the truth (None for colour: events carry none)."""
    if qtype == "describe":
        pairs = zip(_csv(fields["shapes"]), _csv(fields["motions"]))
        return Counter((s, m) for s, m in pairs if m != "static")
    if qtype == "moving":
        return Counter(_csv(fields["moving"]))
    if qtype == "count":
        return int(fields["moving_count"])
    if qtype == "colour":
        return None
    return truth_key(qtype, fields)


def visible_answer(qtype: str, facts: Facts) -> object | None:
    if qtype == "describe":
        return Counter((o.shape, o.motion) for o in facts.objects if o.motion not in (None, "static"))
    if qtype == "moving":
        return Counter() if facts.nothing else Counter(o.shape for o in facts.objects)
    if qtype == "count":
        return facts.number
    if qtype == "colour":
        return None
    return answer_key(qtype, facts)


@dataclass(frozen=True)
class Score:
    """``exact``: the answer equals the reference of its style; ``fields``: the question's
    key matches the truth; ``visible``: the event-visible part matches (None for colour)."""

    exact: bool
    fields: bool
    visible: bool | None

    @property
    def correct(self) -> bool:
        """Exact or field-level match (the quality bar's notion of a right answer)."""
        return self.exact or self.fields


def normalise(text: str) -> str:
    return " ".join(text.strip().split()).lower()


def score_answer(qtype: str, answer: str, reference: str, fields: dict[str, str]) -> Score:
    """Score one answer against its style's reference and the structured truth."""
    facts = extract_facts(answer)
    exact = normalise(answer) == normalise(reference)
    key_ok = answer_key(qtype, facts) == truth_key(qtype, fields)
    vis_truth = visible_truth(qtype, fields)
    visible = None if vis_truth is None else visible_answer(qtype, facts) == vis_truth
    return Score(exact=exact, fields=bool(key_ok), visible=visible)
