"""The DSEC clip builder on a small DSEC-layout split generated here."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from evspec.data.clipio import load_events
from evspec.data.dsec import DsecBuildConfig, build_dsec_clips, load_question_set
from evspec.data.dsec_questions import DSEC_TOP10_QUESTIONS
from evspec.data.errors import DataError
from evspec.data.events import EventStream
from evspec.data.manifest import check_manifest, load_manifest
from evspec.data.video import count_frames

h5py = pytest.importorskip("h5py")
pytest.importorskip("av")

T_IMG0 = 7_000_000_000  # first image timestamp, µs (DSEC times are large absolute values)
N_IMAGES = 40  # 20 Hz -> 1.95 s of images
GAP = (T_IMG0 + 1_000_000, T_IMG0 + 1_600_000)  # no events here (the car stopped)


def make_sequence(root: Path, name: str, seed: int, compress: bool) -> EventStream:
    from evspec.data.dsec_h5 import write_dsec_events_h5

    seq = root / name
    img_dir = seq / "images" / "left" / "rectified"
    img_dir.mkdir(parents=True)
    stamps = T_IMG0 + 50_000 * np.arange(N_IMAGES)
    for i in range(N_IMAGES):
        Image.fromarray(np.full((12, 16, 3), i * 5, np.uint8)).save(img_dir / f"{i:06d}.png")
    (seq / "images" / "timestamps.txt").write_text("\n".join(str(int(t)) for t in stamps) + "\n")
    rng = np.random.default_rng(seed)
    t = np.sort(rng.integers(T_IMG0 - 100_000, T_IMG0 + 2_100_000, 30_000))
    t = t[(t < GAP[0]) | (t >= GAP[1])]
    s = EventStream(rng.integers(0, 640, len(t)), rng.integers(0, 480, len(t)), t,
                    rng.integers(0, 2, len(t)), (640, 480))
    (seq / "events" / "left").mkdir(parents=True)
    write_dsec_events_h5(seq / "events" / "left" / "events.h5", s, T_IMG0 - 200_000,
                         compress=compress)
    return s


def expected_windows(duration: int, step: int) -> list[tuple[int, int]]:
    last = T_IMG0 + 50_000 * (N_IMAGES - 1)
    return [(t0, t0 + duration) for t0 in range(T_IMG0, last - duration + 1, step)]


@pytest.mark.parametrize("compress", [False, True])
def test_builder_windows_counts_and_manifest(tmp_path, compress):
    if compress:
        pytest.importorskip("hdf5plugin")
    root = tmp_path / "train"
    streams = {n: make_sequence(root, n, i, compress) for i, n in enumerate(["seq_a", "seq_b"])}
    (root / "not_a_sequence").mkdir()
    cfg = DsecBuildConfig(duration_us=500_000, overlap=0.5)
    out = tmp_path / "out"
    report = build_dsec_clips(root, out, cfg, progress=False)

    spans = expected_windows(500_000, 250_000)  # t0 = 0, 0.25, ..., 1.25 s after the first image
    assert len(spans) == 6
    empty = [k for k, w in enumerate(spans) if GAP[0] <= w[0] and w[1] <= GAP[1]]
    assert empty == [4]  # [1.0 s, 1.5 s) lies inside the event gap
    m = load_manifest(out / "manifest.json")
    assert report.windows == 12 and report.written == 10 and report.skipped_empty == 2
    assert report.per_sequence == {"seq_a": 5, "seq_b": 5}
    assert [c.id for c in m.clips[:5]] == [f"seq_a-{k:06d}" for k in (0, 1, 2, 3, 5)]
    assert m.meta["duration_us"] == 500_000 and m.meta["question_set"] == "dsec-top10"
    for c in m.clips:
        seq = c.id.rsplit("-", 1)[0]
        k = int(c.id.rsplit("-", 1)[1])
        assert c.window_us == spans[k] and c.split == "test"
        assert [q.question for q in c.questions] == [q for q, _ in DSEC_TOP10_QUESTIONS]
        ev = load_events(m.resolve(c.events))
        want = streams[seq].window_time(*spans[k])
        assert len(ev) == len(want)
        assert np.array_equal(ev.t, want.t) and np.array_equal(ev.x, want.x)
        assert count_frames(m.resolve(c.video)) == 10  # 500 ms of 20 Hz images
    assert check_manifest(out / "manifest.json", n_event_images=5) == []


def test_builder_skips_empty_windows(tmp_path):
    root = tmp_path / "test"
    make_sequence(root, "seq", 0, compress=False)
    cfg = DsecBuildConfig(duration_us=400_000, overlap=0.0, min_frames=8)
    report = build_dsec_clips(root, tmp_path / "o", cfg, progress=False)
    spans = expected_windows(400_000, 400_000)
    empty = [k for k, w in enumerate(spans) if GAP[0] <= w[0] and w[1] <= GAP[1]]
    assert spans[2] == (T_IMG0 + 800_000, T_IMG0 + 1_200_000) and empty == [3]  # (1.2 s, 1.6 s)
    assert report.windows == 4 and report.skipped_empty == 1 and report.written == 3
    ids = [c.id for c in load_manifest(tmp_path / "o" / "manifest.json").clips]
    assert ids == ["seq-000000", "seq-000001", "seq-000002"]
    # too-short windows for 8 frames are skipped and counted, not written
    short = build_dsec_clips(root, tmp_path / "s", DsecBuildConfig(duration_us=300_000),
                             progress=False)
    assert short.written == 0 and short.skipped_few_frames == short.windows > 0


def test_builder_is_resumable_and_never_half_writes(tmp_path, monkeypatch):
    import evspec.data.dsec as dsec_mod

    root = tmp_path / "train"
    make_sequence(root, "seq", 3, compress=False)
    out = tmp_path / "out"
    cfg = DsecBuildConfig(duration_us=500_000, overlap=0.5)
    real_write = dsec_mod.write_video
    calls = {"n": 0}

    def crash_on_third(path, frames, fps, lossless):
        calls["n"] += 1
        if calls["n"] == 3:
            real_write(path, frames[:2], fps=fps, lossless=lossless)  # something on disk...
            raise KeyboardInterrupt  # ...then the user hits Ctrl-C
        return real_write(path, frames, fps=fps, lossless=lossless)

    monkeypatch.setattr(dsec_mod, "write_video", crash_on_third)
    with pytest.raises(KeyboardInterrupt):
        build_dsec_clips(root, out, cfg, progress=False)
    clips = sorted(p.name for p in (out / "clips").iterdir() if not p.name.startswith(".settings"))
    assert clips == ["seq-000000", "seq-000001"]  # whole clips only, no temp folders
    for c in clips:
        assert sorted(p.name for p in (out / "clips" / c).iterdir()) == ["events.npz", "video.mp4"]
    assert not (out / "manifest.json").exists()  # no manifest until the build completes

    monkeypatch.setattr(dsec_mod, "write_video", real_write)
    report = build_dsec_clips(root, out, cfg, progress=False)
    assert report.reused == 2 and report.written == 3 and report.skipped_empty == 1
    assert len(load_manifest(out / "manifest.json").clips) == 5
    assert check_manifest(out / "manifest.json") == []
    with pytest.raises(DataError, match="use a new --out folder"):
        build_dsec_clips(root, out, DsecBuildConfig(duration_us=1_000_000), progress=False)


def test_builder_bad_inputs(tmp_path):
    cfg = DsecBuildConfig(500_000)
    with pytest.raises(DataError, match="is not a folder"):
        build_dsec_clips(tmp_path / "nope", tmp_path / "o", cfg, progress=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no sequence folder"):
        build_dsec_clips(tmp_path / "empty", tmp_path / "o", cfg, progress=False)
    root = tmp_path / "r"
    make_sequence(root, "seq", 0, compress=False)
    (root / "seq" / "images" / "timestamps.txt").write_text("1\n2\n")
    with pytest.raises(DataError, match="2 timestamps but 40 images"):
        build_dsec_clips(root, tmp_path / "o", DsecBuildConfig(500_000), progress=False)
    with pytest.raises(ValueError, match="overlap"):
        DsecBuildConfig(500_000, overlap=1.5)
    with pytest.raises(ValueError, match="split"):
        DsecBuildConfig(500_000, split="dev")


def test_question_sets(tmp_path):
    name, qs = load_question_set("dsec-top10")
    assert name == "dsec-top10" and len(qs) == 10
    assert qs[0] == "What are the key elements in this scene?"
    top = [{"question": "Q1?", "count": 3}, {"question": "Q2?"}]
    (tmp_path / "top50.json").write_text(json.dumps(top))
    assert load_question_set(str(tmp_path / "top50.json")) == ("top50", ("Q1?", "Q2?"))
    (tmp_path / "mine.txt").write_text("First?\n\nSecond?\n")
    assert load_question_set(str(tmp_path / "mine.txt"))[1] == ("First?", "Second?")
    with pytest.raises(DataError, match="neither a question set"):
        load_question_set("top-100")


def test_cli_dsec(tmp_path, cli_app):
    app = cli_app
    root = tmp_path / "train"
    make_sequence(root, "seq", 1, compress=False)
    (tmp_path / "q.txt").write_text("What is moving?\n")
    args = ["data", "dsec", "--root", str(root), "--duration", "1s", "--overlap", "0.5",
            "--out", str(tmp_path / "out"), "--questions", str(tmp_path / "q.txt"), "--no-progress"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "warning:" in res.output and "1000.0 ms" in res.output  # 1 s is far from ~50 ms
    m = load_manifest(tmp_path / "out" / "manifest.json")
    assert len(m.clips) == 2 and m.clips[0].questions[0].question == "What is moving?"
    assert "2 clip(s) written" in res.output
    bad = CliRunner().invoke(app, args[:4] + ["--duration", "1 second"] + args[6:])
    assert bad.exit_code == 1 and "duration" in bad.output
