"""evspec generate --manifest: one record per question, the same as --json, resumable."""

from __future__ import annotations

import json
import os

import pytest
from typer.testing import CliRunner

from api_paths import HAVE_WORLD, WORLD

from evspec.api.batch import answer_manifest
from evspec.cli import app

pytestmark = pytest.mark.skipif(not HAVE_WORLD, reason="world assets not shipped")
CLIPS = ["world-000018", "world-000025"]


@pytest.fixture
def manifest(tmp_path):
    """Two shipped clips, two questions each, in a manifest of the test's own."""
    os.symlink(WORLD / "clips", tmp_path / "clips")
    shipped = json.loads((WORLD / "manifest.json").read_text())
    clips = [dict(c, questions=c["questions"][:2]) for c in shipped["clips"] if c["id"] in CLIPS]
    assert [c["id"] for c in clips] == CLIPS
    path = tmp_path / "m.json"
    path.write_text(json.dumps({**shipped, "clips": clips}))
    return path


def _records(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_cli_answers_every_question_like_json(manifest, tmp_path, world_pipe):
    out = tmp_path / "answers.jsonl"
    res = CliRunner().invoke(app, ["generate", "--manifest", str(manifest), "--out", str(out),
                                   "--max-new-tokens", "8", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert "4 answers written" in res.output
    records = _records(out)
    assert [(r["clip_id"], r["index"]) for r in records] == [(c, i) for c in CLIPS for i in (0, 1)]
    clip = WORLD / "clips" / CLIPS[0]
    want = world_pipe(video=str(clip / "frames"), events=str(clip / "events.npz"),
                      question=records[0]["question"], max_new_tokens=8)
    assert records[0]["tokens"] == want.tokens and records[0]["text"] == want.text
    assert set(records[0]["stats"]) == set(want.to_dict()["stats"])
    assert records[0]["stats"]["drafter"] == "event-head"
    assert records[0]["reference"] and records[0]["qtype"]
    again = CliRunner().invoke(app, ["generate", "--manifest", str(manifest), "--out", str(out),
                                     "--no-resume", "--device", "cpu"])
    assert again.exit_code == 2 and "exists" in again.output


def test_resume_skips_answered_and_redoes_a_torn_line(manifest, tmp_path, world_pipe):
    out = tmp_path / "answers.jsonl"
    first = answer_manifest(world_pipe, manifest, out, max_new_tokens=6)
    assert (first.answered, first.skipped, first.total) == (4, 0, 4)
    whole = out.read_text().splitlines(keepends=True)
    out.write_text(whole[0] + whole[1][: len(whole[1]) // 2])  # killed while writing record 2
    second = answer_manifest(world_pipe, manifest, out, max_new_tokens=6)
    assert (second.answered, second.skipped) == (3, 1)
    key = lambda r: (r["clip_id"], r["index"], r["tokens"], r["text"])  # noqa: E731 (times vary)
    assert [key(json.loads(line)) for line in whole] == [key(r) for r in _records(out)]
    third = answer_manifest(world_pipe, manifest, out, max_new_tokens=6)
    assert (third.answered, third.skipped) == (0, 4)


def test_bad_batch_requests(manifest, tmp_path, world_pipe):
    out = tmp_path / "answers.jsonl"
    out.write_text("not a record\n")
    with pytest.raises(ValueError, match="line 1 is not an answer record"):
        answer_manifest(world_pipe, manifest, out)
    with pytest.raises(ValueError, match="split must be one of"):
        answer_manifest(world_pipe, manifest, tmp_path / "x.jsonl", split="dev")
    res = CliRunner().invoke(app, ["generate", "--manifest", str(manifest)])
    assert res.exit_code == 2 and "--out" in res.output
    res = CliRunner().invoke(app, ["generate", "--manifest", str(manifest), "--out", str(out),
                                   "-q", "What?"])
    assert res.exit_code == 2 and "leave out -q" in res.output
