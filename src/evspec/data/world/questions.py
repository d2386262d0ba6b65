"""Questions about a scene, each answered in two styles with the same content.

* **target style** (what the Video-LLaVA-side model is trained on): names colours and
  mentions static objects, e.g. "A red circle moves left and a blue square stays still."
* **drafter style** (the EventGPT side): "In the scene there is a circle moving left."
  It never states what an event camera cannot see -- colours are "unknown", objects
  that do not move are left out -- so the two models phrase things differently and
  disagree on facts, as the real pair does.

Every QA also carries structured ground truth (``fields``, flat ``str -> str``) for
field-level scoring.  Answers are templated and short (at most 16 words; 18 when
describing three moving objects).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from evspec.data.world.scene import ObjectSpec, SceneSpec
from evspec.data.world.tables import (
    COLOUR_HUES,
    DIRECTIONS,
    DRAFTER_PREFIX,
    NUMBER_WORDS,
    QTYPES,
    QUESTION_PHRASINGS,
    SHAPES,
    SPEEDS,
    TARGET_DIRECTION,
    TARGET_SPEED,
)


@dataclass(frozen=True)
class WorldQA:
    """One question with its target-style ``answer``, drafter-style ``answer_drafter`` and
    structured ground truth ``fields``."""

    question: str
    qtype: str
    answer: str
    answer_drafter: str
    fields: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.qtype not in QTYPES:
            raise ValueError(f"WorldQA.qtype = {self.qtype!r}; expected one of {QTYPES}")


# -- wording helpers ---------------------------------------------------------------------------


def _sentence(text: str) -> str:
    return text[0].upper() + text[1:] + "."


def _join(items: Sequence[str]) -> str:
    """``a``; ``a and b``; ``a, b and c``."""
    if len(items) == 1:
        return items[0]
    return ", ".join(items[:-1]) + " and " + items[-1]


def _number(n: int) -> str:
    if not 0 <= n < len(NUMBER_WORDS):
        raise ValueError(f"no number word for {n}; extend tables.NUMBER_WORDS")
    return NUMBER_WORDS[n]


def _a(word: str) -> str:
    """The indefinite article for ``word``: "an orange", "a red"."""
    return ("an " if word[0] in "aeiou" else "a ") + word


def _target_clause(o: ObjectSpec) -> str:
    if o.moving:
        return f"{_a(o.colour)} {o.shape} moves {o.motion}"
    return f"{_a(o.colour)} {o.shape} stays still"


def _drafter_clause(o: ObjectSpec) -> str:
    return f"{_a(o.shape)} moving {o.motion}"


def _csv(values: Sequence[str]) -> str:
    return ",".join(values)


# -- one answer pair per question type ------------------------------------------------------------
# Each returns (target answer, drafter answer, fields).

Answer = tuple[str, str, dict[str, str]]


def answer_describe(objects: Sequence[ObjectSpec]) -> Answer:
    moving = [o for o in objects if o.moving]
    target = _sentence(_join([_target_clause(o) for o in objects]))
    if moving:
        drafter = f"{DRAFTER_PREFIX} there is {_join([_drafter_clause(o) for o in moving])}."
    else:
        drafter = f"{DRAFTER_PREFIX} nothing is moving."
    fields = {
        "count": str(len(objects)),
        "shapes": _csv([o.shape for o in objects]),
        "colours": _csv([o.colour for o in objects]),
        "motions": _csv([o.motion for o in objects]),
    }
    return target, drafter, fields


def answer_moving(objects: Sequence[ObjectSpec]) -> Answer:
    moving = [o for o in objects if o.moving]
    fields = {
        "moving": _csv([o.shape for o in moving]),
        "colours": _csv([o.colour for o in moving]),
    }
    if not moving:
        return "Nothing is moving.", f"{DRAFTER_PREFIX} nothing is moving.", fields
    verb = "is" if len(moving) == 1 else "are"
    target = _sentence(f"{_join([f'the {o.colour} {o.shape}' for o in moving])} {verb} moving")
    drafter = f"{DRAFTER_PREFIX} there is {_join([_a(o.shape) for o in moving])} moving."
    return target, drafter, fields


def answer_direction(o: ObjectSpec) -> Answer:
    if not o.moving:
        raise ValueError(f"direction question about a static {o.shape}")
    target = f"The {o.colour} {o.shape} moves {TARGET_DIRECTION[o.motion]}."
    drafter = f"{DRAFTER_PREFIX} the {o.shape} is moving {o.motion}."
    return target, drafter, {"shape": o.shape, "colour": o.colour, "direction": o.motion}


def answer_speed(o: ObjectSpec) -> Answer:
    if not o.moving or o.speed is None:
        raise ValueError(f"speed question about a static {o.shape}")
    target = f"The {o.colour} {o.shape} moves {TARGET_SPEED[o.speed]}."
    drafter = f"{DRAFTER_PREFIX} the {o.shape} is moving {o.speed}."
    return target, drafter, {"shape": o.shape, "colour": o.colour, "speed": o.speed}


def answer_colour(o: ObjectSpec) -> Answer:
    target = f"The {o.shape} is {o.colour}."
    drafter = f"{DRAFTER_PREFIX} the {o.shape} has an unknown colour."
    return target, drafter, {"shape": o.shape, "colour": o.colour}


def answer_count(objects: Sequence[ObjectSpec]) -> Answer:
    n, m = len(objects), sum(o.moving for o in objects)
    target = "There is one object." if n == 1 else f"There are {_number(n)} objects."
    if m == 1:
        drafter = f"{DRAFTER_PREFIX} one object is moving."
    else:
        drafter = f"{DRAFTER_PREFIX} {_number(m)} objects are moving."
    return target, drafter, {"count": str(n), "moving_count": str(m)}


def answer_shape(o: ObjectSpec) -> Answer:
    target = f"The {o.colour} object is {_a(o.shape)}."
    drafter = f"{DRAFTER_PREFIX} the object is {_a(o.shape)}."
    return target, drafter, {"shape": o.shape, "colour": o.colour}


# -- questions for a scene ----------------------------------------------------------------------


def _ask(phrasing: str, o: ObjectSpec | None) -> str:
    if o is None:
        return phrasing
    return phrasing.format(shape=o.shape, colour=o.colour)


def make_qa(
    qtype: str, objects: Sequence[ObjectSpec], phrasing: str, subject: ObjectSpec | None
) -> WorldQA:
    """The QA of type ``qtype`` asked with ``phrasing`` (slots filled from ``subject``)."""
    if qtype == "describe":
        ans = answer_describe(objects)
    elif qtype == "moving":
        ans = answer_moving(objects)
    elif qtype == "count":
        ans = answer_count(objects)
    elif subject is None:
        raise ValueError(f"question type {qtype!r} needs a subject object")
    elif qtype == "direction":
        ans = answer_direction(subject)
    elif qtype == "speed":
        ans = answer_speed(subject)
    elif qtype == "colour":
        ans = answer_colour(subject)
    elif qtype == "shape":
        ans = answer_shape(subject)
    else:
        raise ValueError(f"unknown question type {qtype!r}; expected one of {QTYPES}")
    target, drafter, fields = ans
    return WorldQA(_ask(phrasing, subject), qtype, target, drafter, fields)


_NEEDS_SUBJECT = {"direction": True, "speed": True, "colour": False, "shape": False}


def scene_questions(
    scene: SceneSpec, rng: np.random.Generator, qtypes: Sequence[str] = QTYPES
) -> list[WorldQA]:
    """One question of each applicable type in ``qtypes`` (direction and speed need a moving
    object), with a random phrasing and a random subject object."""
    out = []
    for qtype in qtypes:
        if qtype not in QUESTION_PHRASINGS:
            raise ValueError(f"unknown question type {qtype!r}; expected one of {QTYPES}")
        phrasing = str(rng.choice(list(QUESTION_PHRASINGS[qtype])))
        subject = None
        if qtype in _NEEDS_SUBJECT:
            pool = scene.moving if _NEEDS_SUBJECT[qtype] else scene.objects
            if not pool:
                continue
            subject = pool[int(rng.integers(len(pool)))]
        out.append(make_qa(qtype, scene.objects, phrasing, subject))
    return out


# -- the whole language, enumerated (for the tokenizer) -------------------------------------


def _obj(shape: str, colour: str, motion: str, speed: str | None) -> ObjectSpec:
    return ObjectSpec(shape, colour, 1.0, 0.0, 0.0, 0.0, 0.0, motion, speed)


def world_texts(max_objects: int = 3) -> Iterator[str]:
    """Every question phrasing and every answer form of the world, deterministic order.

    Covers each (shape, colour, motion, speed) in both styles and the plural / list forms
    for 0..``max_objects`` objects (moving or not), so a tokenizer trained on it knows
    every word the generator can produce.
    """
    motions = [("static", None)] + [(d, s) for d in DIRECTIONS for s in SPEEDS]
    for qtype, phrasings in QUESTION_PHRASINGS.items():
        for p in phrasings:
            if "{" not in p:
                yield p
            for shape in SHAPES:
                for colour in COLOUR_HUES:
                    if "{" in p:
                        yield p.format(shape=shape, colour=colour)
    for shape in SHAPES:
        for colour in COLOUR_HUES:
            for motion, speed in motions:
                o = _obj(shape, colour, motion, speed)
                for fn in (answer_colour, answer_shape):
                    yield from fn(o)[:2]
                if o.moving:
                    for fn in (answer_direction, answer_speed):
                        yield from fn(o)[:2]
                yield from answer_describe([o])[:2]
                yield from answer_moving([o])[:2]
    # Plurals and lists: n objects of which m move.
    for n in range(1, max_objects + 1):
        for m in range(n + 1):
            objs = [
                _obj(SHAPES[i % len(SHAPES)], list(COLOUR_HUES)[i % len(COLOUR_HUES)],
                     "left" if i < m else "static", "slow" if i < m else None)
                for i in range(n)
            ]
            for fn in (answer_describe, answer_moving, answer_count):
                yield from fn(objs)[:2]
