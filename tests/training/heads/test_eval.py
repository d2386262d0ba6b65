"""``evaluate``: engine figures beside offline agreement, seeds grouped, questions answered."""

from __future__ import annotations

import json

import pytest

from evspec.training.heads.eval import EvalConfig, evaluate, parse_drafter
from evspec.training.heads.report import render_eval


def test_evaluate_reports_engine_and_offline_side_by_side(trained, collected, micro_world, target, eventgpt, tmp_path):
    specs = [parse_drafter(s) for s in (
        "eventgpt",
        f"bottleneck={trained['bottleneck'] / 'best'}",
        f"target-head={trained['target-head'] / 'best'}",
        f"event-head.s0={trained['event-head'] / 'best'}",
        f"event-head.s1={trained['event-head'] / 'last'}",
    )]
    assert specs[3].drafter == "event-head" and specs[3].group == "event-head"
    cfg = EvalConfig(gammas=(1, 3), report_gamma=3, limit=3, max_new_tokens=8, canvas="sensor", warmup=0)
    result = evaluate(cfg, target, eventgpt, micro_world, specs, tmp_path / "ev", offline_data=collected,
                      progress=False)
    rows = {r["label"]: r for r in result["rows"]}
    for label, row in rows.items():
        for g in ("1", "3"):
            cell = row["per_gamma"][g]
            assert cell["n_ok"] == 3 and cell["match_rate"] == 1.0, (label, g)  # lossless
            assert 0.0 <= cell["alpha"] <= 1.0 and cell["tau"] >= 1.0 and cell["c"] > 0
        assert 0.0 <= row["offline"]["top1"] <= 1.0
    assert "top1_depth2" in rows["event-head.s0"]["offline"]  # heads: deeper drafts offline too
    assert result["groups"]["event-head"]["members"] == ["event-head.s0", "event-head.s1"]
    assert result["answers"]["event_memory"]["verdict"]
    assert set(result["by_qtype"]) and all("bottleneck" in v for v in result["by_qtype"].values())
    saved = json.loads((tmp_path / "ev" / "eval.json").read_text())
    assert saved["main_gamma"] == 3 and (tmp_path / "ev" / "engine" / "records.jsonl").is_file()
    md = (tmp_path / "ev" / "eval.md").read_text()
    assert "| event-head.s0 |" in md and "Does event memory help?" in md and md == render_eval(saved)


def test_parse_drafter_errors(tmp_path):
    with pytest.raises(ValueError, match="LABEL=CHECKPOINT"):
        parse_drafter("medusa")
    with pytest.raises(FileNotFoundError, match="not a module checkpoint"):
        parse_drafter(f"x={tmp_path}")
    with pytest.raises(ValueError, match="gammas"):
        EvalConfig(gammas=(0,))
