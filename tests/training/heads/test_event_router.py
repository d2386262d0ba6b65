"""``event-router``: the event-head or the target-head by question type, reachable from
``make_drafter``; lossless; its table from a file or the colour rule."""

from __future__ import annotations

import pytest

from evspec.decoding.drafters import DrafterError, make_drafter
from evspec.decoding.engine import generate
from evspec.decoding.router import HeuristicRouter, save_qtype_table


def _router(ckpts, target, eventgpt, **options):
    return make_drafter("event-router", target=target, draft_model=eventgpt,
                        event_head_path=ckpts["event-head"], target_head_path=ckpts["target-head"],
                        **options)


@pytest.mark.parametrize("static", [False, True])
def test_event_router_is_lossless_and_routes_by_type(
    ckpts, requests, target, eventgpt, static, tmp_path
):
    qtypes = [r.qtype for r in requests]
    assert qtypes[0] != qtypes[1]
    table = HeuristicRouter(event_drafter="target-head", table=((qtypes[0], "event-head"),))
    path = save_qtype_table(table, tmp_path / "router.json")
    drafter = _router(ckpts, target, eventgpt, router_path=path, static=static)
    assert drafter.name == "event-router"
    for req in requests:
        base = generate(target, req, None, max_new_tokens=10)
        assert generate(target, req, drafter, gamma=3, max_new_tokens=10).tokens == base.tokens
    assert drafter.routes == ["event-head", "target-head"]


def test_event_router_default_table_sends_colour_to_the_target_head(
    ckpts, target, eventgpt, monkeypatch
):
    monkeypatch.setenv("EVSPEC_ASSETS", "/nonexistent")  # no shipped router.json
    drafter = _router(ckpts, target, eventgpt)
    table = dict(drafter.router.table)
    assert table["colour"] == "target-head" and table["moving"] == "event-head"


def test_event_router_errors(ckpts, target, eventgpt, tmp_path):
    with pytest.raises(DrafterError, match="draft model"):
        make_drafter("event-router", target=target)
    path = save_qtype_table(HeuristicRouter(event_drafter="eventgpt"), tmp_path / "r.json")
    with pytest.raises(ValueError, match="pools"):
        _router(ckpts, target, eventgpt, router_path=path)
