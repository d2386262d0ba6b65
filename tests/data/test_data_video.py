"""Video reading (uniform 8-frame sampling, RGB) and writing (mp4 lossy/lossless, PNG folder)."""

from __future__ import annotations

import numpy as np
import pytest

from evspec.data.errors import DataError
from evspec.data.video import (
    count_frames,
    read_video,
    sample_indices,
    write_frame_folder,
    write_video,
)

pytest.importorskip("av")


def coloured_frames(n: int, h: int = 32, w: int = 48) -> np.ndarray:
    """Frame i: a flat colour encoding i plus a red square (identifiable after lossy coding)."""
    frames = np.zeros((n, h, w, 3), np.uint8)
    for i in range(n):
        frames[i, :, :, 1] = 10 * i
        frames[i, :, :, 2] = 200
        frames[i, 4:12, 4:12] = (255, 0, 0)
    return frames


@pytest.mark.parametrize("n", [8, 9, 20, 23, 100])
def test_sample_indices_match_video_llava(n):
    assert sample_indices(n, 8).tolist() == np.arange(0, n, n / 8).astype(int).tolist()
    assert sample_indices(n, 8)[0] == 0 and sample_indices(n, 8)[-1] < n


def test_lossless_mp4_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (20, 24, 33, 3), dtype=np.uint8)  # odd width is fine
    path = write_video(tmp_path / "v.mp4", frames, fps=20, lossless=True)
    assert count_frames(path) == 20
    got = read_video(path)
    assert got.shape == (8, 24, 33, 3) and got.dtype == np.uint8
    assert np.array_equal(got, frames[sample_indices(20, 8)])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v.mp4"]  # no temp file left


def test_lossy_mp4_keeps_order_and_colour(tmp_path):
    frames = coloured_frames(20)
    path = write_video(tmp_path / "v.mp4", frames)
    got = read_video(path).astype(int)
    want = frames[sample_indices(20, 8)].astype(int)
    assert np.abs(got - want).mean() < 4  # lossy but close
    # the sampled frames are the right ones (green level encodes the index) and RGB, not BGR
    assert np.allclose(got[:, 20, 30, 1], want[:, 20, 30, 1], atol=6)
    assert (got[:, 8, 8, 0] > 200).all() and (got[:, 8, 8, 2] < 60).all()
    with pytest.raises(ValueError, match="even width and height"):
        write_video(tmp_path / "odd.mp4", frames[:, :31])


def test_frame_folder_round_trip(tmp_path):
    frames = coloured_frames(12, 10, 14)
    folder = write_frame_folder(tmp_path / "frames", frames)
    assert count_frames(folder) == 12
    assert np.array_equal(read_video(folder), frames[sample_indices(12, 8)])
    # numeric names sort numerically (2 < 10), as the research's folders are named
    (folder / "000011.png").rename(folder / "11.png")
    assert np.array_equal(read_video(folder, 12)[-1], frames[11])


def test_fewer_than_8_frames(tmp_path):
    path = write_video(tmp_path / "short.mp4", coloured_frames(5))
    with pytest.raises(DataError) as err:
        read_video(path)
    assert err.value.file == str(path) and "only 5 frame(s); 8 are needed" in err.value.reason
    folder = write_frame_folder(tmp_path / "f", coloured_frames(3))
    with pytest.raises(DataError, match="only 3 frame"):
        read_video(folder)


def test_unreadable_and_missing_video(tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"junk" * 500)
    with pytest.raises(DataError) as err:
        read_video(bad)
    assert err.value.file == str(bad) and "unreadable video" in err.value.reason
    good = write_video(tmp_path / "good.mp4", coloured_frames(20))
    trunc = tmp_path / "trunc.mp4"
    trunc.write_bytes(good.read_bytes()[:300])
    with pytest.raises(DataError, match="trunc.mp4"):
        read_video(trunc)
    with pytest.raises(DataError, match="does not exist"):
        read_video(tmp_path / "missing.mp4")
    folder = tmp_path / "frames"
    write_frame_folder(folder, coloured_frames(9))
    (folder / "000003.png").write_bytes(b"broken png")
    with pytest.raises(DataError, match="000003.png: image: unreadable"):
        read_video(folder, 9)


def test_write_rejects_bad_frames(tmp_path):
    with pytest.raises(ValueError, match="uint8 RGB"):
        write_video(tmp_path / "x.mp4", np.zeros((3, 8, 8), np.uint8))
    with pytest.raises(ValueError, match="uint8 RGB"):
        write_frame_folder(tmp_path / "f", np.zeros((3, 8, 8, 3), np.float32))
