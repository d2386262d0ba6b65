"""Questions and the two answer styles: same content, different wording, drafter honesty."""

from __future__ import annotations

import re

import numpy as np
import pytest
from world_scenes import make_scene, obj

from evspec.data.world.config import WorldConfig
from evspec.data.world.questions import WorldQA, make_qa, scene_questions, world_texts
from evspec.data.world.scene import SceneConfig, sample_scene
from evspec.data.world.tables import COLOUR_HUES, DIRECTIONS, QTYPES, SHAPES

COLOURS = set(COLOUR_HUES)


def _words(text: str) -> list[str]:
    return text.rstrip(".").replace(",", "").split()


def _sampled_qas(n: int = 150) -> list[tuple[object, WorldQA]]:
    cfg = SceneConfig()
    out = []
    for i in range(n):
        rng = np.random.default_rng(i)
        scene = sample_scene(rng, cfg)
        out += [(scene, qa) for qa in scene_questions(scene, rng)]
    return out


def test_example_from_the_spec() -> None:
    scene = make_scene([obj("circle", "red", vx=-10.0)])
    phrasing = "Which direction is the {shape} moving?"
    qa = make_qa("direction", scene.objects, phrasing, scene.objects[0])
    assert qa.question == "Which direction is the circle moving?"
    assert qa.answer == "The red circle moves to the left."
    assert qa.answer_drafter == "In the scene the circle is moving left."
    assert qa.fields == {"shape": "circle", "colour": "red", "direction": "left"}


def test_describe_mentions_static_objects_only_in_target_style() -> None:
    scene = make_scene([obj("circle", "red", vx=-10.0), obj("square", "blue")])
    qa = make_qa("describe", scene.objects, "Describe the scene.", None)
    assert qa.answer == "A red circle moves left and a blue square stays still."
    assert qa.answer_drafter == "In the scene there is a circle moving left."
    assert qa.fields["count"] == "2" and qa.fields["motions"] == "left,static"
    count = make_qa("count", scene.objects, "How many objects are there?", None)
    assert count.answer == "There are two objects."
    assert count.answer_drafter == "In the scene one object is moving."


def test_articles_follow_the_next_word() -> None:
    scene = make_scene([obj("square", "orange", vx=5.0), obj("circle", "red")])
    qa = make_qa("describe", scene.objects, "Describe the scene.", None)
    assert qa.answer == "An orange square moves right and a red circle stays still."


def test_still_scene_answers() -> None:
    scene = make_scene([obj("triangle", "green")])
    qas = {q.qtype: q for q in scene_questions(scene, np.random.default_rng(0))}
    assert "direction" not in qas and "speed" not in qas  # nothing moves
    assert qas["moving"].answer == "Nothing is moving."
    assert qas["moving"].answer_drafter == "In the scene nothing is moving."


def test_sampled_questions_are_consistent_and_drafter_never_states_colour() -> None:
    seen_types = set()
    for scene, qa in _sampled_qas():
        seen_types.add(qa.qtype)
        assert qa.qtype in QTYPES
        limit = 18 if qa.qtype == "describe" else 16  # three moving objects: 18 words
        assert len(_words(qa.answer)) <= limit and len(_words(qa.answer_drafter)) <= limit
        assert qa.answer_drafter.startswith("In the scene")
        assert not re.search(r"\ba orange", qa.answer.lower())  # "an orange"
        assert not COLOURS & set(_words(qa.answer_drafter))  # events cannot know colour
        if qa.qtype == "colour":
            assert qa.fields["colour"] in _words(qa.answer)
        if qa.qtype in ("direction", "speed"):
            subject = next(o for o in scene.objects if o.shape == qa.fields["shape"])
            assert subject.moving and subject.colour == qa.fields["colour"]
        if qa.qtype == "direction":
            assert qa.fields["direction"] in DIRECTIONS
            assert qa.answer_drafter.endswith(f" {qa.fields['direction']}.")
        if qa.qtype == "shape":
            assert qa.fields["shape"] in SHAPES and qa.answer.endswith(f" {qa.fields['shape']}.")
        if qa.qtype == "count":
            assert int(qa.fields["count"]) == len(scene.objects)
        if qa.qtype == "describe":
            # static objects appear in the target answer only
            for o in scene.objects:
                assert o.shape in qa.answer
                assert (o.shape in qa.answer_drafter) == o.moving
    assert seen_types == set(QTYPES)


def test_several_phrasings_per_type_are_used() -> None:
    by_type: dict[str, set[str]] = {}
    for _, qa in _sampled_qas(60):
        stem = qa.question
        for s in SHAPES:
            stem = stem.replace(s, "{shape}")
        for c in COLOURS:
            stem = stem.replace(c, "{colour}")
        by_type.setdefault(qa.qtype, set()).add(stem)
    assert all(len(v) >= 3 for v in by_type.values())


def test_world_texts_cover_every_generated_sentence() -> None:
    texts = set(world_texts())
    for _, qa in _sampled_qas(80):
        assert qa.question in texts or "{" in qa.question
        # every word of every answer appears somewhere in the enumerated language
    words = {w for t in texts for w in _words(t)}
    for _, qa in _sampled_qas(80):
        assert set(_words(qa.answer)) <= words
        assert set(_words(qa.answer_drafter)) <= words


def test_bad_question_type() -> None:
    with pytest.raises(ValueError, match="qtype"):
        WorldQA("q?", "weather", "a", "b")
    with pytest.raises(ValueError, match="subject"):
        make_qa("colour", [obj()], "What colour is the {shape}?", None)
    with pytest.raises(ValueError, match="static"):
        make_qa("direction", [obj()], "Where is the {shape} going?", obj())


def test_scene_config_validation() -> None:
    with pytest.raises(ValueError, match="pan_px_s"):
        SceneConfig(pan_px_s=(2.0, 9.0))
    with pytest.raises(ValueError, match="max_objects"):
        SceneConfig(max_objects=9)
    with pytest.raises(ValueError, match="multiple of video_fps"):
        WorldConfig(video_fps=30)
    with pytest.raises(ValueError, match="split_fractions"):
        WorldConfig(split_fractions=(0.5, 0.2, 0.2))
