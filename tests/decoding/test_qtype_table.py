"""The question-type router table learned from validation timings: which drafter wins per
type, the margin that keeps the default, the JSON round trip and clear errors."""

from __future__ import annotations

import json

import pytest

from evspec.decoding.router import learn_qtype_table, load_qtype_table, save_qtype_table
from evspec.models.request import Request

QTYPES = ["colour", "colour", "moving", "moving", "shape", None]
TIMES = {  # ms per item
    "target-head": [10.0, 10.0, 20.0, 20.0, 10.0, 5.0],
    "event-head": [12.0, 11.0, 15.0, 16.0, 9.8, 1.0],
}


def test_each_type_goes_to_its_fastest_drafter():
    router = learn_qtype_table(QTYPES, TIMES, default="target-head")
    assert dict(router.table) == {"colour": "target-head", "moving": "event-head",
                                  "shape": "event-head"}
    assert router.route(Request("What colour is the circle?", None, None)) == "target-head"
    assert router.route(Request("What is moving?", None, None)) == "event-head"
    assert router.route(Request("Tell me a joke", None, None)) == "target-head"  # untyped: default


def test_a_margin_keeps_the_default_unless_clearly_beaten():
    router = learn_qtype_table(QTYPES, TIMES, default="target-head", margin=0.05)
    assert dict(router.table) == {"colour": "target-head", "moving": "event-head",
                                  "shape": "target-head"}


def test_table_round_trips_through_json(tmp_path):
    router = learn_qtype_table(QTYPES, TIMES, default="target-head")
    path = save_qtype_table(router, tmp_path / "router.json", about={"split": "val", "items": 6})
    data = json.loads(path.read_text())
    assert data["about"] == {"split": "val", "items": 6} and data["default"] == "target-head"
    again = load_qtype_table(path)
    assert again.table == router.table and again.default == router.default


def test_bad_inputs_say_what_is_wrong(tmp_path):
    with pytest.raises(ValueError, match="default"):
        learn_qtype_table(QTYPES, TIMES, default="none")
    with pytest.raises(ValueError, match="one time per item"):
        learn_qtype_table(QTYPES[:2], TIMES, default="target-head")
    with pytest.raises(ValueError, match="margin"):
        learn_qtype_table(QTYPES, TIMES, default="target-head", margin=1.5)
    bad = tmp_path / "x.json"
    bad.write_text(json.dumps({"kind": "other"}))
    with pytest.raises(ValueError, match="not a question-type router"):
        load_qtype_table(bad)
    bad.write_text("{")
    with pytest.raises(ValueError, match="cannot read"):
        load_qtype_table(bad)
