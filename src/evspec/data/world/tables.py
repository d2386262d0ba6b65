"""The world's fixed vocabulary: shapes, colours, motions, question phrasings, prompts.

Pure data (no logic), so the language the small models learn is visible in one place.
Changing anything here changes the generated text and therefore the world tokenizer;
regenerate the data and retrain after an edit.
"""

from __future__ import annotations

# -- scene vocabulary ------------------------------------------------------------------------

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "diamond", "cross")

# Colour name -> (nominal sRGB-ish hue in [0, 1], luminance level index).  The rendered
# colour keeps the hue but is moved to the level's luminance exactly (see ``palette.py``),
# so colours sharing a level are identical to an event camera.
COLOUR_HUES: dict[str, tuple[tuple[float, float, float], int]] = {
    "red": ((1.0, 0.0, 0.0), 0),
    "green": ((0.0, 1.0, 0.0), 0),
    "blue": ((0.0, 0.0, 1.0), 0),
    "purple": ((0.6, 0.0, 0.8), 0),
    "yellow": ((1.0, 1.0, 0.0), 1),
    "cyan": ((0.0, 1.0, 1.0), 1),
    "orange": ((1.0, 0.55, 0.0), 1),
    "pink": ((1.0, 0.4, 0.7), 1),
}

# Luminance of each level (linear display units, background is darker: 0.10 .. 0.32).
LUMINANCE_LEVELS: tuple[float, ...] = (0.5, 0.75)

# Direction name -> unit-ish image-plane vector (x right, y down).
DIRECTIONS: dict[str, tuple[float, float]] = {
    "left": (-1.0, 0.0),
    "right": (1.0, 0.0),
    "up": (0.0, -1.0),
    "down": (0.0, 1.0),
    "up-left": (-0.70710678, -0.70710678),
    "up-right": (0.70710678, -0.70710678),
    "down-left": (-0.70710678, 0.70710678),
    "down-right": (0.70710678, 0.70710678),
}

SPEEDS: tuple[str, ...] = ("slow", "fast")

NUMBER_WORDS: tuple[str, ...] = ("no", "one", "two", "three", "four", "five")

# -- question phrasings (several per type; slots: {shape}, {colour}) ----------------------------

QTYPES: tuple[str, ...] = ("describe", "moving", "direction", "speed", "colour", "count", "shape")

QUESTION_PHRASINGS: dict[str, tuple[str, ...]] = {
    "describe": (
        "Describe the scene.",
        "What is happening in the video?",
        "What do you see?",
        "Describe what happens.",
    ),
    "moving": (
        "What is moving?",
        "Which objects are moving?",
        "What moves in the scene?",
    ),
    "direction": (
        "Which direction is the {shape} moving?",
        "Where is the {shape} going?",
        "In which direction does the {shape} move?",
    ),
    "speed": (
        "How fast is the {shape} moving?",
        "Is the {shape} moving fast or slow?",
        "What is the speed of the {shape}?",
    ),
    "colour": (
        "What colour is the {shape}?",
        "What is the colour of the {shape}?",
        "Which colour does the {shape} have?",
    ),
    "count": (
        "How many objects are there?",
        "How many objects are in the scene?",
        "Count the objects.",
    ),
    "shape": (
        "What shape is the {colour} object?",
        "What is the shape of the {colour} object?",
        "Which shape is {colour}?",
    ),
}

# -- answer wording ------------------------------------------------------------------------------
# Target style (Video-LLaVA side) names colours and static objects; drafter style (EventGPT
# side) starts with "In the scene", uses plainer words, and never states what events cannot
# show (colour, objects that do not move).

TARGET_DIRECTION: dict[str, str] = {
    "left": "to the left",
    "right": "to the right",
    "up": "upward",
    "down": "downward",
    "up-left": "up and to the left",
    "up-right": "up and to the right",
    "down-left": "down and to the left",
    "down-right": "down and to the right",
}
TARGET_SPEED: dict[str, str] = {"slow": "slowly", "fast": "quickly"}
DRAFTER_PREFIX = "In the scene"

# -- prompt templates (MODELS.md) -------------------------------------------------------------

TARGET_PROMPT = "USER: <video>\n{question} ASSISTANT:"
EVENTGPT_SYSTEM = (
    "A chat between a curious human and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the human's questions."
)
EVENTGPT_PROMPT = EVENTGPT_SYSTEM + " USER: <ev_start><event><ev_end>\n{question} ASSISTANT:"

# Placeholders the models splice or add themselves; they are not part of the shared vocabulary.
PROMPT_PLACEHOLDERS: tuple[str, ...] = ("<video>", "<image>", "<event>", "<ev_start>", "<ev_end>")
