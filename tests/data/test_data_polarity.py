"""Polarity conventions: {-1, 1} files load through a named mapping, and the ``release``
mapping renders exactly as the EventGPT release paints (0 blue, any other value red)."""

from __future__ import annotations

import numpy as np
import pytest

from evspec.data.clipio import load_events
from evspec.data.errors import DataError
from evspec.data.polarity import map_polarity
from evspec.data.render import render_canvas


def release_painting(x, y, p, n):
    """The release's painting restated: per-chunk canvas, 0 blue, anything else red."""
    size = len(x) // n
    out = []
    for i in range(n):
        lo, hi = i * size, (len(x) if i == n - 1 else (i + 1) * size)
        img = np.full((int(y[lo:hi].max()) + 1, int(x[lo:hi].max()) + 1, 3), 255, np.uint8)
        for j in range(lo, hi):
            img[y[j], x[j]] = (0, 0, 255) if p[j] == 0 else (255, 0, 0)
        out.append(img)
    return out


@pytest.fixture
def signed_npy(tmp_path):
    """A research-style pickled-dict .npy whose polarity is {-1, 0, 1}."""
    rng = np.random.default_rng(0)
    n = 120
    data = {
        "x": rng.integers(0, 30, n).astype(np.uint16),
        "y": rng.integers(0, 20, n).astype(np.uint16),
        "t": np.sort(rng.integers(0, 40_000, n)).astype(np.int64),
        "p": rng.choice(np.array([-1, 0, 1], np.int8), n),
    }  # fmt: skip
    path = tmp_path / "signed.npy"
    np.save(path, data, allow_pickle=True)
    return path, data


def test_binary_refuses_signed_and_names_the_conventions(signed_npy):
    path, _ = signed_npy
    with pytest.raises(DataError, match="polarity='signed'"):
        load_events(path)
    with pytest.raises(ValueError, match="binary, release, signed"):
        load_events(path, polarity="sign")


def test_release_and_signed_mappings(signed_npy):
    path, data = signed_npy
    release = load_events(path, polarity="release")
    signed = load_events(path, polarity="signed")
    np.testing.assert_array_equal(release.p, (data["p"] != 0).astype(np.uint8))
    np.testing.assert_array_equal(signed.p, (data["p"] > 0).astype(np.uint8))
    got = render_canvas(release, 3, "chunk", warn_window=False)
    want = release_painting(data["x"], data["y"], data["p"], 3)
    assert len(got) == 3
    for a, b in zip(got, want):
        np.testing.assert_array_equal(a, b)


def test_map_polarity_checks_values():
    np.testing.assert_array_equal(map_polarity([-1, 1, 0, 2], "release"), [1, 1, 0, 1])
    np.testing.assert_array_equal(map_polarity([-1.0, 1.0], "signed"), [0, 1])
    with pytest.raises(DataError, match="NaN"):
        map_polarity([np.nan, 1.0], "signed")
    with pytest.raises(DataError, match="numeric"):
        map_polarity(np.array(["a"]), "release")
    assert map_polarity("untouched", "binary") == "untouched"


def test_cli_render_takes_the_convention(signed_npy, tmp_path, cli_app):
    from typer.testing import CliRunner

    path, _ = signed_npy
    runner = CliRunner()
    out = tmp_path / "png"
    bad = runner.invoke(cli_app, ["data", "render", str(path), "--out", str(out), "--n", "3"])
    assert bad.exit_code != 0 and "signed" in bad.output
    args = ["data", "render", str(path), "--out", str(out), "--n", "3"]
    ok = runner.invoke(cli_app, [*args, "--polarity", "release"])
    assert ok.exit_code == 0, ok.output
    assert len(list(out.glob("*.png"))) == 3
