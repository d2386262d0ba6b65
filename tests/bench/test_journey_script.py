"""``benchmarks/real_layouts.py`` writes the releases' exact folder layouts, and
``benchmarks/journey.py`` runs the whole user journey on them (tiny sizes, CPU)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench_scripts import load_script


def test_real_layouts_are_the_releases(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    layouts = load_script("real_layouts", monkeypatch)
    info = layouts.write_all(
        tmp_path, "tiny", device="cpu", dtype="float32", seed=0,
        dsec_seconds={"test": 1.0}, events_per_s=20_000, image_size=(64, 48),
    )  # fmt: skip
    target, draft = Path(info["target"]), Path(info["draft_model"])
    for folder in (target, draft):
        index = json.loads((folder / "model.safetensors.index.json").read_text())
        shards = sorted(set(index["weight_map"].values()))
        assert len(shards) > 1 and all((folder / s).is_file() for s in shards)
        assert (folder / "tokenizer.model").is_file()
    assert {p.name for p in target.iterdir()} >= {
        "config.json", "generation_config.json", "preprocessor_config.json", "tokenizer.json",
        "tokenizer_config.json",
    }  # fmt: skip
    raw = json.loads((draft / "config.json").read_text())
    assert raw["model_type"] == "EventChat_llama" and raw["event_feature_adaptor"] is True
    # only the release's keys: evspec's own are absent, and so is mm_use_im_patch_token
    ours = ("evspec_prompt_style", "vision_config", "num_event_images")
    for key in ("mm_use_im_patch_token", *ours):
        assert key not in raw
    assert not (draft / "tokenizer.json").exists()
    seq = tmp_path / "dsec" / "test" / "interlaken_00_c"
    assert (seq / "events/left/events.h5").is_file() and (seq / "images/timestamps.txt").is_file()
    pngs = sorted((seq / "images/left/rectified").glob("*.png"))
    assert len(pngs) == 20
    from PIL import Image

    assert Image.open(pngs[0]).size == (64, 48)

    from evspec.models.eventgpt import EventGPT
    from evspec.models.target import VideoLlavaTarget
    from evspec.models.tokenizer import shared_vocab_size

    eventgpt = EventGPT.from_pretrained(draft)
    video_llava = VideoLlavaTarget.from_pretrained(target)
    assert eventgpt.config.prompt_style == "release"
    assert len(eventgpt.tokenizer) == eventgpt.vocab_size == 513  # <ev_patch> added on load
    assert shared_vocab_size(eventgpt.tokenizer, video_llava.tokenizer) == 512
    text = "What is the layout of the road in the scene?"
    assert eventgpt.tokenizer(text).input_ids == video_llava.tokenizer(text).input_ids
    spm = pytest.importorskip("sentencepiece")
    sp = spm.SentencePieceProcessor(model_file=str(draft / "tokenizer.model"))
    for text in (text, "USER: <ev_start><ev_end>\nDescribe it. ASSISTANT:", "héllo  wörld 42"):
        assert [1, *sp.encode(text)] == video_llava.tokenizer(text).input_ids


@pytest.mark.slow
def test_journey_runs_every_stage_at_tiny_size(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    journey = load_script("journey", monkeypatch)
    out = tmp_path / "out"
    rc = journey.main([
        "--out", str(out), "--size", "tiny", "--device", "cpu", "--dtype", "float32",
        "--questions", "train=4,val=2,test=1", "--dsec-seconds", "train=1.5,val=1.5,test=1.5",
        "--events-per-s", "20000", "--image-size", "64x48", "--steps", "2", "--batch-size", "2",
        "--max-new-tokens", "4",
        "--gammas", "2", "--train-budget", "30",
    ])  # fmt: skip
    result = json.loads((out / "journey.json").read_text())
    assert rc == 0 and result["failure"] is None
    stages = {s["name"]: s for s in result["stages"]}
    assert list(stages) == [
        "write-checkpoints", "data-dsec-train", "data-dsec-val", "data-dsec-test",
        "collect-train", "collect-val", "train-event-head", "train-target-head",
        "train-aligner", "train-lora", "eval", "bench", "generate",
    ]  # fmt: skip
    for s in stages.values():
        assert s["rc"] == 0 and s["wall_s"] > 0 and s["rss_peak_bytes"] > 2**20
    assert stages["collect-train"]["questions"] == 4 and stages["collect-val"]["questions"] == 2
    assert stages["eval"]["questions"] == 1 and stages["bench"]["questions"] == 1
    answers = stages["bench"]["extra"]["answer_s_per_1000_questions"]
    assert {"none", "eventgpt", "event-head", "target-head"} <= set(answers)
    assert set(result["projection_hours"]) >= {"collect", "answer with none"}
    for module in ("event-head", "target-head", "aligner", "lora"):
        assert (out / "work" / "runs" / module / "best" / "config.json").is_file()
    md = (out / "journey.md").read_text()
    assert "python3 -m evspec collect" in md and "Random weights" in md
    assert "A: " in (out / "logs" / "generate.log").read_text()  # the answer was printed
    assert (out / "logs" / "bench.log").is_file()
