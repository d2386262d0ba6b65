"""Without PyAV, ``write_video`` writes the lossy mp4 with OpenCV (the GPU image has OpenCV
but no PyAV), and the readers read it back."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from evspec.data.video import read_video, write_video


def test_write_video_falls_back_to_opencv(tmp_path, monkeypatch) -> None:
    pytest.importorskip("cv2")
    monkeypatch.setitem(sys.modules, "av", None)  # import av -> ModuleNotFoundError
    frames = np.zeros((10, 48, 64, 3), np.uint8)
    for i in range(10):
        frames[i, :, : 6 * (i + 1)] = (200, 40, 40)  # a growing red band
    path = write_video(tmp_path / "v.mp4", frames, fps=20)
    assert path.is_file() and not list(tmp_path.glob(".*tmp*"))
    back = read_video(path, num_frames=10)
    assert back.shape == frames.shape
    assert np.abs(back.astype(int) - frames.astype(int)).mean() < 12  # lossy, but the video
    with pytest.raises(ValueError, match="PyAV"):
        write_video(tmp_path / "w.mp4", frames, lossless=True)
