"""The OpenCV fallback reads what PyAV reads (used when PyAV is not installed)."""

from __future__ import annotations

import numpy as np
import pytest

from evspec.data import video
from evspec.data.errors import DataError

cv2 = pytest.importorskip("cv2")
pytest.importorskip("av")


def _clip(n: int) -> np.ndarray:
    rng = np.random.default_rng(n)
    frames = rng.integers(0, 256, (n, 32, 48, 3), dtype=np.uint8)
    frames[:, :4, :4] = np.arange(n, dtype=np.uint8)[:, None, None, None] * 10  # frame id patch
    return frames


def test_opencv_fallback_matches_pyav(tmp_path, monkeypatch):
    path = video.write_video(tmp_path / "clip.mp4", _clip(20), fps=20)
    with_av = video.read_video(path, num_frames=8)
    monkeypatch.setattr(video, "_has_av", lambda: False)
    with_cv2 = video.read_video(path, num_frames=8)
    assert with_cv2.shape == with_av.shape == (8, 32, 48, 3)
    assert with_cv2.dtype == np.uint8
    # both decode the same H.264 stream; colour conversion may differ by a few levels
    assert np.abs(with_cv2.astype(int) - with_av.astype(int)).mean() < 6
    assert video.count_frames(path) == 20


def test_opencv_fallback_errors_name_the_file(tmp_path, monkeypatch):
    monkeypatch.setattr(video, "_has_av", lambda: False)
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"not a video at all")
    with pytest.raises(DataError, match="broken.mp4"):
        video.read_video(bad)
    short = video.write_video(tmp_path / "short.mp4", _clip(4), fps=20)
    with pytest.raises(DataError, match="short.mp4"):
        video.read_video(short, num_frames=8)
