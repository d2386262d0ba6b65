"""Question sets for DSEC clips (data, kept apart from the builder's logic).

``DSEC_TOP10_QUESTIONS``: the ten most frequent questions on DSEC scenes in the EventGPT
instruction data, with their counts, as tallied by the research (its ``top50_questions.json``).
"""

from __future__ import annotations

DSEC_TOP10_QUESTIONS: tuple[tuple[str, int], ...] = (
    ("What are the key elements in this scene?", 1675),
    ("Can you elaborate on the elements of the scene provided?", 1292),
    ("What is this scene about?", 1225),
    ("What is the layout of the road in the scene?", 1005),
    ("What type of vehicles are present in the scene and how are they positioned?", 827),
    ("What do you think is going on in this scene?", 680),
    ("What elements are present in the scene?", 654),
    ("What do you see happening in this scene?", 593),
    ("Describe the following scene.", 545),
    ("What types of vehicles are present in the scene and how are they positioned?", 543),
)

QUESTION_SETS: dict[str, tuple[str, ...]] = {
    "dsec-top10": tuple(q for q, _ in DSEC_TOP10_QUESTIONS),
}
"""Named question sets accepted by ``evspec data dsec --questions NAME``."""
