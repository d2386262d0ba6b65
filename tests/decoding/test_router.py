"""Query routing: deterministic decisions, keyword typing of every world phrasing, a
learned router that is reproducible and round-trips through JSON, lossless routed decoding."""

from __future__ import annotations

import json

import numpy as np
import pytest

from engine_doubles import TinyTextLM
from evspec.data.world.tables import QUESTION_PHRASINGS
from evspec.decoding.drafters import ModelDrafter, PromptLookupDrafter
from evspec.decoding.engine import generate
from evspec.decoding.router import (
    HeuristicRouter,
    LearnedRouter,
    RoutedDrafter,
    classify_question,
    fastest_labels,
)
from evspec.models.request import Request


def _phrasings(shape="circle", colour="red"):
    for qtype, forms in QUESTION_PHRASINGS.items():
        for f in forms:
            yield qtype, f.format(shape=shape, colour=colour)


def test_keyword_classifier_types_every_world_phrasing():
    for shape, colour in (("circle", "red"), ("triangle", "blue"), ("square", "yellow")):
        for qtype, q in _phrasings(shape, colour):
            assert classify_question(q) == qtype, q
    assert classify_question("What colour is the moving square?") == "colour"
    assert classify_question("Tell me a joke") is None


def test_heuristic_router_defaults_and_table():
    r = HeuristicRouter(event_drafter="event-head")
    assert r.route(Request("What colour is the circle?")) == "none"
    assert r.route(Request("Where is the square going?")) == "event-head"
    assert r.route(Request("anything", qtype="colour")) == "none"  # the given type wins
    assert r.route(Request("Tell me a joke")) == "event-head"  # untyped -> default
    custom = HeuristicRouter(table=(("count", "prompt-lookup"),), default="none")
    assert custom.route(Request("How many objects are there?")) == "prompt-lookup"
    assert custom.route(Request("Describe the scene.")) == "none"
    with pytest.raises(ValueError):
        HeuristicRouter(table=(("count",),))
    # deterministic: same request, same answer, every time
    reqs = [Request(q) for _, q in _phrasings()]
    assert [r.route(x) for x in reqs] == [r.route(x) for x in reqs]


def _train_set():
    qs, labels = [], []
    for shape, colour in (("circle", "red"), ("square", "green"), ("triangle", "blue")):
        for qtype, q in _phrasings(shape, colour):
            qs.append(q)
            labels.append("none" if qtype in ("colour", "shape") else "eventgpt")
    return qs, labels


def test_learned_router_learns_is_deterministic_and_round_trips(tmp_path):
    qs, labels = _train_set()
    a = LearnedRouter.fit(qs, labels)
    b = LearnedRouter.fit(qs, labels)
    assert np.array_equal(a.weights, b.weights) and np.array_equal(a.bias, b.bias)
    assert [a.predict(q) for q in qs] == labels  # fits its training set
    # held-out objects and colours (new words) still route by the question's form
    for qtype, q in _phrasings("star", "purple"):
        assert a.predict(q) == ("none" if qtype in ("colour", "shape") else "eventgpt"), q
    path = a.save(tmp_path / "router.json")
    c = LearnedRouter.load(path)
    assert [c.route(Request(q)) for q in qs] == labels
    assert np.allclose(c.predict_proba(qs), a.predict_proba(qs))
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"kind": "something-else"}))
    with pytest.raises(ValueError, match="not a learned router"):
        LearnedRouter.load(bad)


def test_fastest_labels():
    times = {"none": [10.0, 10.0, 10.0], "eventgpt": [5.0, 12.0, 9.8], "prompt-lookup": [6.0, 11.0, 9.9]}
    assert fastest_labels(times) == ["eventgpt", "none", "eventgpt"]
    assert fastest_labels(times, margin=0.05) == ["eventgpt", "none", "none"]
    with pytest.raises(ValueError):
        fastest_labels({"a": [1.0], "b": []})


def test_routed_drafter_is_lossless_and_logs_routes():
    target, draft = TinyTextLM(seed=0), TinyTextLM(seed=1)
    pool = {"eventgpt": ModelDrafter(draft, name="tiny"), "prompt-lookup": PromptLookupDrafter()}
    router = HeuristicRouter(table=(("colour", "none"), ("count", "prompt-lookup")))
    routed = RoutedDrafter(router, pool)
    questions = ["What colour is it?", "How many are there?", "Where is it going?"]
    for q in questions:
        ref = generate(target, Request(q), None, max_new_tokens=20)
        res = generate(target, Request(q), routed, gamma=3, max_new_tokens=20)
        assert res.tokens == ref.tokens
        if routed.routes[-1] == "none":
            assert res.stats.drafted == 0
    assert routed.routes == ["none", "prompt-lookup", "eventgpt"]
    with pytest.raises(ValueError, match="not in the pool"):
        RoutedDrafter(HeuristicRouter(event_drafter="missing"), pool).begin(Request("move?"), target, None, 0)
