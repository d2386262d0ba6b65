"""The GPU script ``benchmarks/events_pay.py`` rehearsed at tiny size on the CPU: a micro
world (validation + test clips), random-weight presets and untrained heads; every
configuration measured on every test request, answers identical, tables and routers out."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from bench_scripts import load_script


@pytest.fixture
def events_pay(monkeypatch):
    return load_script("events_pay", monkeypatch)


@pytest.fixture(scope="module")
def micro_world(tmp_path_factory) -> Path:
    from evspec.data.world.config import WorldConfig
    from evspec.data.world.generate import generate_world
    from evspec.data.world.scene import SceneConfig

    out = tmp_path_factory.mktemp("events_pay_world") / "w"
    generate_world(out, 8, seed=1, cfg=WorldConfig(scene=SceneConfig(resolution=32)),
                   progress=False, tokenizer=False)
    return out / "manifest.json"


def test_events_pay_rehearsal(events_pay, micro_world, tmp_path):
    out = tmp_path / "out"
    events_pay.main([
        "--out", str(out), "--target", "tiny-random", "--draft-model", "tiny-random",
        "--heads", "untrained",
        "--world", str(micro_world), "--device", "cpu", "--engine", "plain", "--gammas", "2,3",
        "--max-new-tokens", "5", "--budget-s", "600", "--resamples", "50", "--device-preprocess",
    ])
    data = json.loads((out / "events_pay.json").read_text())
    labels = {"target-only", "target-head γ2", "event-head γ2", "event-router γ2",
              "target-head γ3", "event-head γ3", "event-router γ3"}
    assert set(data["summary"]["configs"]) == labels
    keys = {r["key"] for r in data["records"]}
    assert keys and len(data["records"]) == len(keys) * len(labels)  # complete pairs
    assert all(r["identical"] for r in data["records"])  # lossless, every configuration
    positions = {(r["config"], r["position"]) for r in data["records"]}
    assert len({p for c, p in positions if c == "target-only"}) > 1  # the order rotates
    assert {r["phase"] for r in data["val_records"]} == {"val"}
    assert not keys & {r["key"] for r in data["val_records"]}  # the router never saw a test request
    eh = data["summary"]["configs"]["event-head γ3"]
    assert eh["vs_target_only"]["n"] == len(keys) and eh["vs_target_head"]["n"] == len(keys)
    table = json.loads((out / "router_g2.json").read_text())
    assert table["kind"] == "evspec-qtype-router"
    assert table["about"]["learned_from"] == "world validation split"
    md = (out / "events_pay.md").read_text()
    assert "| event-router γ3 |" in md and "vs target-head" in md
