"""Data-layer benchmark: EventGPT rendering speed and DSEC window reads.

Run (from the repository root)::

    PYTHONPATH=src python3 benchmarks/data_bench.py            # prints a table
    PYTHONPATH=src python3 benchmarks/data_bench.py --json out/data_bench.json

1. Rendering: 2 M random events at 640x480 into 5 images, pinned to one CPU core
   (target: <= 0.1 s).
2. DSEC windows: synthetic DSEC-layout ``events.h5`` files (Blosc-compressed like DSEC
   when hdf5plugin is installed) of two lengths; reading windows of 0.1 / 0.5 / 1 s from
   each, plus loading the whole file for contrast.  Window reads should scale with the
   window and not with the file.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from evspec.data.dsec_h5 import DsecEventsFile, write_dsec_events_h5
from evspec.data.events import EventStream
from evspec.data.render import render_event_images


def _timeit(fn: Callable[[], object], repeats: int) -> dict[str, float]:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return {"best_s": min(times), "median_s": statistics.median(times)}


def _stream(n: int, seconds: float, seed: int, t0: int = 0) -> EventStream:
    rng = np.random.default_rng(seed)
    return EventStream(
        rng.integers(0, 640, n, dtype=np.uint16),
        rng.integers(0, 480, n, dtype=np.uint16),
        np.sort(rng.integers(t0, t0 + int(seconds * 1e6), n)),
        rng.integers(0, 2, n, dtype=np.uint8),
        (640, 480),
    )


def bench_render(n_events: int, repeats: int) -> dict[str, object]:
    stream = _stream(n_events, 0.05, seed=0)
    render_event_images(stream, 5, (640, 480))  # warm-up
    out = _timeit(lambda: render_event_images(stream, 5, (640, 480)), repeats)
    return {"events": n_events, "images": 5, "canvas": "640x480", **out}


def bench_dsec(rate: int, file_seconds: list[float], windows_s: list[float], repeats: int,
               compress: bool) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    t_offset = 1_000_000_000
    with tempfile.TemporaryDirectory() as tmp:
        for secs in file_seconds:
            path = Path(tmp) / f"events_{secs:g}s.h5"
            stream = _stream(int(rate * secs), secs, seed=1, t0=t_offset)
            write_dsec_events_h5(path, stream, t_offset, compress=compress)
            del stream
            size_mb = path.stat().st_size / 2**20
            with DsecEventsFile(path) as f:
                first, span = f.t_first_us, f.t_last_us - f.t_first_us
                for w in windows_s:
                    w_us = int(w * 1e6)
                    # a different window each repeat, so h5py's chunk cache cannot serve it
                    starts = iter(first + (k * (w_us + 12_345)) % (span - w_us)
                                  for k in range(repeats + 1))
                    n = len(f.read_window(first, first + w_us))

                    def read(f: DsecEventsFile = f, w_us: int = w_us) -> None:
                        t0 = next(starts)
                        f.read_window(t0, t0 + w_us)

                    r = _timeit(read, repeats)
                    rows.append({"file_s": secs, "file_mb": round(size_mb, 1), "window_s": w,
                                 "events": n, **r})
                r = _timeit(f.read_all, max(1, repeats // 3))
                rows.append({"file_s": secs, "file_mb": round(size_mb, 1), "window_s": "all",
                             "events": len(f), **r})
    return rows


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--render-events", type=int, default=2_000_000)
    ap.add_argument("--rate", type=int, default=1_000_000, help="events per second in the h5 files")
    ap.add_argument("--file-seconds", type=float, nargs="+", default=[5.0, 30.0])
    ap.add_argument("--windows", type=float, nargs="+", default=[0.1, 0.5, 1.0])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--no-compress", action="store_true", help="plain h5 instead of Blosc")
    ap.add_argument("--json", type=Path, default=None, help="also write the records here")
    args = ap.parse_args()

    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})  # one CPU core
    compress = not args.no_compress
    if compress:
        try:
            import hdf5plugin  # noqa: F401
        except ModuleNotFoundError:
            compress = False
    env = {"cpu": _cpu_name(), "python": platform.python_version(),
           "numpy": np.__version__, "cores_used": 1,
           "h5_compression": "blosc" if compress else None}
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    env["load_avg_1min"] = load
    print(f"CPU: {env['cpu']} (1 core pinned), numpy {env['numpy']}, load average {load:.2f}")
    render = bench_render(args.render_events, args.repeats)
    print(f"render {render['events']:,} events -> 5 x 640x480: "
          f"best {render['best_s'] * 1e3:.1f} ms, median {render['median_s'] * 1e3:.1f} ms")
    dsec = bench_dsec(args.rate, args.file_seconds, args.windows, args.repeats, compress)
    print(f"\nDSEC events.h5 at {args.rate:,} ev/s ({env['h5_compression'] or 'uncompressed'}):")
    print(f"{'file':>8} {'MB':>7} {'window':>7} {'events':>11} {'best ms':>9} {'median ms':>10}")
    for r in dsec:
        win = r["window_s"] if r["window_s"] == "all" else f"{r['window_s']:g}s"
        print(f"{r['file_s']:>7g}s {r['file_mb']:>7} {win:>7} {r['events']:>11,} "
              f"{r['best_s'] * 1e3:>9.1f} {r['median_s'] * 1e3:>10.1f}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"env": env, "render": render, "dsec": dsec}, indent=1))


if __name__ == "__main__":
    main()
