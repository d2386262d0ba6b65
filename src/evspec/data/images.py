"""Write EventGPT's event images of an events file as PNGs (``evspec data render``)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from evspec.data.clipio import load_events
from evspec.data.render import render_event_images


def write_event_pngs(
    events_path: str | Path,
    out_dir: str | Path,
    n: int = 5,
    *,
    window_us: tuple[int, int] | None = None,
    canvas: Literal["data", "sensor"] = "data",
) -> list[Path]:
    """Render ``n`` event images of the file (optionally a window) to ``OUT/<stem>_<i>.png``."""
    from PIL import Image

    if canvas not in ("data", "sensor"):
        raise ValueError(f"write_event_pngs: canvas must be 'data' or 'sensor', got {canvas!r}")
    stream = load_events(events_path, window_us)
    images = render_event_images(stream, n, stream.sensor_size if canvas == "sensor" else None)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = Path(events_path).name.split(".")[0]
    paths = []
    for i, img in enumerate(images):  # img: [H, W, 3] uint8
        p = out / f"{stem}_{i}.png"
        Image.fromarray(img).save(p)
        paths.append(p)
    return paths
