"""Write EventGPT's event images of an events file as PNGs (``evspec data render``)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from evspec.data.clipio import load_events
from evspec.data.render import CANVASES, render_canvas


def write_event_pngs(
    events_path: str | Path,
    out_dir: str | Path,
    n: int = 5,
    *,
    window_us: tuple[int, int] | None = None,
    canvas: Literal["chunk", "data", "sensor"] = "chunk",
    polarity: str = "binary",
    overwrite: bool = False,
) -> list[Path]:
    """Render ``n`` event images of the file (optionally a window) to ``OUT/<stem>_<i>.png``
    on ``canvas`` (see :func:`~evspec.data.render.render_canvas`); ``polarity``: the file's
    polarity convention (:mod:`evspec.data.polarity`).  Images of those names already there
    (another clip with the same file name) are refused unless ``overwrite``."""
    from PIL import Image

    if canvas not in CANVASES:
        raise ValueError(
            f"write_event_pngs: canvas must be one of {', '.join(CANVASES)}, got {canvas!r}"
        )
    stream = load_events(events_path, window_us, polarity=polarity)
    images = render_canvas(stream, n, canvas)
    out = Path(out_dir)
    stem = Path(events_path).name.split(".")[0]
    paths = [out / f"{stem}_{i}.png" for i in range(len(images))]
    there = [p.name for p in paths if p.exists()]
    if there and not overwrite:
        raise FileExistsError(f"{out}: {', '.join(there[:3])}{' ...' if len(there) > 3 else ''} "
                              "exist already; choose another --out or pass --overwrite")
    out.mkdir(parents=True, exist_ok=True)
    for p, img in zip(paths, images):  # img: [H, W, 3] uint8
        Image.fromarray(img).save(p)
    return paths
