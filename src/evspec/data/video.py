"""Video in and out: RGB frames sampled the way Video-LLaVA samples them.

Reading: an mp4 (PyAV; OpenCV as a fallback when PyAV is missing) or a folder of
PNG/JPG frames (sorted by name, numerically when the names are numbers).  ``read_video``
returns ``num_frames`` frames sampled uniformly over the *whole* clip at indices
``floor(i * n / num_frames)`` -- the exact form of Video-LLaVA's
``np.arange(0, n, n / num_frames)`` -- as ``[num_frames, H, W, 3]`` uint8 RGB.

Writing: ``write_video`` writes an mp4 with H.264 (``libx264``, yuv420p: small but *lossy*,
and width/height must be even) or, with ``lossless=True``, H.264 in RGB (``libx264rgb``,
``crf 0``: bit-exact frames, larger files).  ``write_frame_folder`` writes PNGs (lossless,
any size).  Every writer goes through a temporary name and ``os.replace``, so an
interrupted write never leaves a half-written video behind.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from evspec.data.atomic import atomic_dir, atomic_file
from evspec.data.errors import DataError

FRAME_SUFFIXES = (".png", ".jpg", ".jpeg")
DEFAULT_FPS = 20


def sample_indices(n_frames: int, num_frames: int) -> np.ndarray:
    """Uniform indices over the whole clip: ``[num_frames]`` int64, ``floor(i * n / k)``."""
    return (np.arange(num_frames, dtype=np.int64) * n_frames) // num_frames


def _need_enough(source: str, n: int, num_frames: int) -> None:
    if num_frames < 1:
        raise ValueError(f"read_video: num_frames must be >= 1, got {num_frames}")
    if n < num_frames:
        raise DataError(
            source,
            "frames",
            f"the video has only {n} frame(s); {num_frames} are needed for uniform sampling "
            "(use a longer clip or fewer frames)",
        )


# -- folders of frames -------------------------------------------------------------------------
def _frame_key(p: Path) -> tuple[int, int | str, str]:
    stem = p.stem
    return (0, int(stem), stem) if re.fullmatch(r"\d+", stem) else (1, stem, stem)


def list_frame_files(folder: Path) -> list[Path]:
    files = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in FRAME_SUFFIXES]
    return sorted(files, key=_frame_key)


def _read_image(path: Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))  # [H, W, 3] uint8
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise DataError(str(path), "image", f"unreadable image ({exc})") from None


def _read_folder(folder: Path, num_frames: int) -> np.ndarray:
    files = list_frame_files(folder)
    _need_enough(str(folder), len(files), num_frames)
    frames = [_read_image(files[i]) for i in sample_indices(len(files), num_frames)]
    shapes = {f.shape for f in frames}
    if len(shapes) != 1:
        raise DataError(str(folder), "frames", f"frames have different sizes: {sorted(shapes)}")
    return np.stack(frames)


# -- mp4 through PyAV (or OpenCV) --------------------------------------------------------------
def _av_errors() -> tuple[type[BaseException], ...]:
    import av

    return (av.FFmpegError, OSError, ValueError, EOFError)


def _count_av(path: Path) -> int:
    """Frames in the first video stream: packets counted by demuxing (no decoding)."""
    import av

    with av.open(str(path)) as container:
        if not container.streams.video:
            raise DataError(str(path), "video", "the file has no video stream")
        stream = container.streams.video[0]
        return sum(1 for pkt in container.demux(stream) if pkt.size > 0)


def _decode_av(path: Path, wanted: np.ndarray) -> tuple[dict[int, np.ndarray], int]:
    """Decode, converting only the ``wanted`` indices; returns (frames by index, total)."""
    import av

    want = set(int(i) for i in wanted)
    got: dict[int, np.ndarray] = {}
    total = 0
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for frame in container.decode(stream):
            if total in want:
                got[total] = frame.to_ndarray(format="rgb24")  # [H, W, 3] uint8
            total += 1
    return got, total


def _read_av(path: Path, num_frames: int) -> np.ndarray:
    source = str(path)
    try:
        n = _count_av(path)
        _need_enough(source, n, num_frames)
        wanted = sample_indices(n, num_frames)
        got, total = _decode_av(path, wanted)
        if total != n:  # packet count disagreed with the decoder: resample on the true count
            _need_enough(source, total, num_frames)
            wanted = sample_indices(total, num_frames)
            got, total = _decode_av(path, wanted)
    except DataError:
        raise
    except _av_errors() as exc:
        reason = f"unreadable video ({type(exc).__name__}: {exc})"
        raise DataError(source, "video", reason) from None
    return np.stack([got[int(i)] for i in wanted])


def _read_cv2(path: Path, num_frames: int) -> np.ndarray:
    try:
        import cv2
    except ModuleNotFoundError:
        raise DataError(
            str(path), "video", "reading mp4 needs PyAV or OpenCV: pip install 'evspec[video]'"
        ) from None
    cap = cv2.VideoCapture(str(path))
    try:
        frames = []
        while True:
            ok, bgr = cap.read()
            if not ok:
                break
            frames.append(bgr[:, :, ::-1].copy())  # BGR -> RGB
    finally:
        cap.release()
    if not frames:
        raise DataError(str(path), "video", "unreadable video (OpenCV decoded no frames)")
    _need_enough(str(path), len(frames), num_frames)
    return np.stack([frames[i] for i in sample_indices(len(frames), num_frames)])


def _has_av() -> bool:
    try:
        import av  # noqa: F401
    except ModuleNotFoundError:
        return False
    return True


def count_frames(path: str | Path) -> int:
    """Number of frames of an mp4 or a frame folder (no decoding for mp4 with PyAV)."""
    path = Path(path)
    if path.is_dir():
        return len(list_frame_files(path))
    if not path.is_file():
        raise DataError(str(path), "file", "does not exist")
    if _has_av():
        try:
            return _count_av(path)
        except DataError:
            raise
        except _av_errors() as exc:
            raise DataError(str(path), "video", f"unreadable video ({exc})") from None
    return _cv2_count(path)


def _cv2_count(path: Path) -> int:
    try:
        import cv2
    except ModuleNotFoundError:
        raise DataError(
            str(path), "video", "reading mp4 needs PyAV or OpenCV: pip install 'evspec[video]'"
        ) from None
    cap = cv2.VideoCapture(str(path))
    n = 0
    while cap.grab():
        n += 1
    cap.release()
    return n


def read_video(path: str | Path, num_frames: int = 8) -> np.ndarray:
    """``num_frames`` frames sampled uniformly over the clip: ``[num_frames, H, W, 3]`` uint8 RGB.

    ``path`` is an mp4 (or any container FFmpeg reads) or a folder of PNG/JPG frames.
    Raises ``DataError`` naming the file for a missing or unreadable video and for a
    video with fewer than ``num_frames`` frames.
    """
    path = Path(path)
    if path.is_dir():
        return _read_folder(path, num_frames)
    if not path.is_file():
        raise DataError(str(path), "file", "does not exist")
    if _has_av():
        return _read_av(path, num_frames)
    return _read_cv2(path, num_frames)


# -- writing -----------------------------------------------------------------------------------
def _check_frames(frames: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
    arr = np.asarray(frames)
    if arr.ndim != 4 or arr.shape[-1] != 3 or arr.dtype != np.uint8 or arr.shape[0] < 1:
        raise ValueError(
            f"frames must be uint8 RGB [T, H, W, 3] with T >= 1, got {arr.dtype} {arr.shape}"
        )
    return arr


def write_video(
    path: str | Path,
    frames: np.ndarray | Sequence[np.ndarray],
    fps: int = DEFAULT_FPS,
    *,
    lossless: bool = False,
) -> Path:
    """Write ``frames`` ``[T, H, W, 3]`` uint8 RGB to an mp4 at ``fps`` (atomically).

    ``lossless=False``: H.264 yuv420p (libx264, crf 17) -- small, lossy, even sizes only.
    ``lossless=True``: H.264 RGB (libx264rgb, crf 0) -- frames read back bit-exactly.
    Without PyAV, OpenCV writes the lossy case (MPEG-4 part 2, ``mp4v``); lossless needs PyAV.
    """
    arr = _check_frames(frames)
    path = Path(path)
    _, h, w, _ = arr.shape
    try:
        import av
    except ModuleNotFoundError:
        if lossless:
            raise ValueError(
                f"write_video: {path}: lossless mp4 needs PyAV (pip install av); "
                "or use write_frame_folder"
            ) from None
        return _write_cv2(path, arr, fps)
    if not lossless and (h % 2 or w % 2):
        raise ValueError(
            f"write_video: {path}: yuv420p H.264 needs even width and height, got {w}x{h}; "
            "pass lossless=True or use write_frame_folder"
        )
    codec, pix_fmt, crf = ("libx264rgb", "rgb24", "0") if lossless else ("libx264", "yuv420p", "17")
    with atomic_file(path, suffix=".tmp.mp4") as tmp:
        with av.open(str(tmp), mode="w", format="mp4") as container:
            stream = container.add_stream(codec, rate=int(fps))
            stream.width, stream.height, stream.pix_fmt = w, h, pix_fmt
            stream.options = {"crf": crf, "preset": "medium"}
            for rgb in arr:  # rgb: [H, W, 3]
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
                for packet in stream.encode(frame):
                    container.mux(packet)
            for packet in stream.encode():  # flush the encoder
                container.mux(packet)
    return path


def _write_cv2(path: Path, arr: np.ndarray, fps: int) -> Path:
    """``arr`` ``[T, H, W, 3]`` uint8 RGB to an ``mp4v`` mp4 with OpenCV (atomically)."""
    try:
        import cv2
    except ModuleNotFoundError:
        raise ValueError(
            f"write_video: {path}: writing mp4 needs PyAV (pip install av) or OpenCV"
        ) from None
    _, h, w, _ = arr.shape
    with atomic_file(path, suffix=".tmp.mp4") as tmp:
        writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), float(fps), (w, h))
        if not writer.isOpened():
            raise ValueError(f"write_video: {path}: OpenCV cannot open an mp4v writer")
        try:
            for rgb in arr:  # rgb: [H, W, 3]
                writer.write(np.ascontiguousarray(rgb[..., ::-1]))  # OpenCV takes BGR
        finally:
            writer.release()
    return path


def write_frame_folder(folder: str | Path, frames: np.ndarray | Sequence[np.ndarray]) -> Path:
    """Write frames as ``000000.png, 000001.png, ...`` into ``folder`` (lossless, atomic).

    The folder is built under a temporary name and renamed into place; an existing folder
    at ``folder`` is replaced.
    """
    from PIL import Image

    arr = _check_frames(frames)
    folder = Path(folder)
    with atomic_dir(folder) as tmp:
        for i, rgb in enumerate(arr):
            Image.fromarray(rgb).save(tmp / f"{i:06d}.png")
    return folder
