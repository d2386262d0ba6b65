"""data dsec refuses to call an empty build a dataset; data render refuses to overwrite
another clip's images."""

from __future__ import annotations

from typer.testing import CliRunner

from evspec.data.clipio import save_events

from test_data_dsec import make_sequence  # a sibling module (tests/data is on sys.path)


def test_dsec_windows_too_short_for_the_frames_fail(tmp_path, cli_app):
    root = tmp_path / "train"
    make_sequence(root, "seq", 1, compress=False)
    (tmp_path / "q.txt").write_text("What is moving?\n")
    res = CliRunner().invoke(cli_app, [
        "data", "dsec", "--root", str(root), "--duration", "50ms", "--out", str(tmp_path / "out"),
        "--questions", str(tmp_path / "q.txt"), "--no-progress"])
    assert res.exit_code == 1
    assert "no clips" in res.output and "--min-frames is 8" in res.output


def test_render_refuses_to_overwrite_images_of_the_same_name(tmp_path, cli_app, make_stream):
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        stream = make_stream(2000, 64, 48, seed=1 if name == "a" else 2)
        save_events(tmp_path / name / "events.npz", stream)
    out = tmp_path / "png"
    first = CliRunner().invoke(cli_app, ["data", "render", str(tmp_path / "a" / "events.npz"),
                                         "--out", str(out), "--n", "2"])
    assert first.exit_code == 0, first.output
    before = (out / "events_0.png").read_bytes()
    args = ["data", "render", str(tmp_path / "b" / "events.npz"), "--out", str(out), "--n", "2"]
    again = CliRunner().invoke(cli_app, args)
    assert again.exit_code == 1 and "--overwrite" in again.output
    assert (out / "events_0.png").read_bytes() == before
    assert CliRunner().invoke(cli_app, [*args, "--overwrite"]).exit_code == 0
    assert (out / "events_0.png").read_bytes() != before
