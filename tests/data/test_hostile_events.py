"""Hostile and careless event files: small files that asked for hours of work or gigabytes
of memory, self-referencing or absurdly deep pickles, torn or forged archives.  Each is
refused quickly with a ``DataError`` naming the file; ``data check`` lists every bad clip."""

from __future__ import annotations

import io
import json
import os
import pickle
import struct
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from evspec.data.clipio import load_events, save_events
from evspec.data.errors import DataError
from evspec.data.events import EventStream
from evspec.data.limits import MAX_CANVAS_SIDE, MAX_PICKLE_DEPTH
from evspec.data.manifest import QA, ClipEntry, Manifest, check_manifest, save_manifest
from evspec.data.render import render_event_images
from evspec.data.research_npy import load_research_npy

EVENTS = {"x": np.arange(8, dtype=np.uint16), "y": np.arange(8, dtype=np.uint16),
          "t": np.arange(8, dtype=np.int64), "p": np.zeros(8, np.uint8)}


def research_npy(path: Path, extra: object) -> Path:
    """A research ``.npy`` (pickled dict) with good events and ``extra`` under ``meta``."""
    np.save(path, {**EVENTS, "meta": extra}, allow_pickle=True)
    return path


def shared_list(depth: int) -> list:
    """``a = [a, a]`` nested ``depth`` deep: 2^depth paths through ``depth`` lists."""
    a: list = []
    for _ in range(depth):
        a = [a, a]
    return a


def raw_pickle_npy(path: Path, payload: bytes) -> Path:
    with open(path, "wb") as f:
        header = {"descr": "|O", "fortran_order": False, "shape": ()}
        np.lib.format.write_array_header_1_0(f, header)
        f.write(payload)
    return path


def deep_dicts(depth: int) -> bytes:
    """Pickle opcodes of ``{"x": {"x": ... {} ...}}`` ``depth`` deep (no Python recursion)."""
    key = b"X" + struct.pack("<I", 1) + b"x"  # BINUNICODE "x"
    return b"\x80\x02" + (b"}" + key) * depth + b"}" + b"s" * depth + b"."


def test_shared_nested_list_is_checked_in_linear_time(tmp_path: Path) -> None:
    path = research_npy(tmp_path / "shared20.npy", shared_list(20))  # 2^20 paths, 20 lists
    start = time.perf_counter()
    _, meta = load_research_npy(path)
    assert time.perf_counter() - start < 5 and len(meta["meta"]) == 2
    bomb = research_npy(tmp_path / "shared40.npy", shared_list(40))
    assert bomb.stat().st_size < 4096
    with pytest.raises(DataError, match=rf"shared40.npy: meta(\[\d\])+: nested deeper than "
                                        rf"{MAX_PICKLE_DEPTH} levels"):
        load_events(bomb)


def test_self_reference_and_deep_nesting_are_named_errors(tmp_path: Path) -> None:
    loop: list = []
    loop.append(loop)
    with pytest.raises(DataError, match=r"loop.npy: meta\[0\]: a container that contains itself"):
        load_events(research_npy(tmp_path / "loop.npy", loop))
    deep = raw_pickle_npy(tmp_path / "deep.npy", deep_dicts(100_000))
    with pytest.raises(DataError, match=r"deep.npy: x(\.x)+: nested deeper than"):
        load_events(deep)


def test_unreadable_npy_is_named(tmp_path: Path) -> None:
    (tmp_path / "dir.npy").mkdir()
    with pytest.raises(DataError, match=r"dir.npy: file: is not a file"):
        load_events(tmp_path / "dir.npy")
    path = research_npy(tmp_path / "locked.npy", 1)
    os.chmod(path, 0)
    try:
        if os.access(path, os.R_OK):  # root reads anything
            pytest.skip("running as root: permissions do not stop reads")
        with pytest.raises(DataError, match=r"locked.npy: file: cannot be read"):
            load_events(path)
    finally:
        os.chmod(path, 0o644)


def test_stray_event_far_outside_any_sensor_is_refused_before_allocation(tmp_path: Path) -> None:
    for x, y in ((8000, 6000), (65535, 65535)):
        stream = EventStream([0, 1, x], [0, 1, y], [0, 1, 2], [0, 1, 1])  # no sensor size
        path = save_events(tmp_path / f"stray{x}.npz", stream)
        with pytest.raises(DataError, match=rf"stray{x}.npz: x/y: events reaching \(x={x}, y={y}\) "
                                            rf"would make a {x + 1}x{y + 1} event image"):
            render_event_images(load_events(path), 3, warn_window=False)
    big = EventStream([0, 1, 2], [0, 1, 2], [0, 1, 2], [0, 1, 1], (65535, 65535))
    with pytest.raises(DataError, match=r"the sensor size \(65535, 65535\)"):
        render_event_images(big, 3, big.sensor_size, warn_window=False)
    ok = EventStream([0, 1, MAX_CANVAS_SIDE - 1], [0, 1, 0], [0, 1, 2], [0, 1, 1])
    assert render_event_images(ok, 1, warn_window=False).shape == (1, 2, MAX_CANVAS_SIDE, 3)


def test_decoded_size_over_the_limit_is_refused(tmp_path: Path, monkeypatch) -> None:
    n = 20_000
    zeros = EventStream(np.zeros(n), np.zeros(n), np.zeros(n), np.zeros(n))
    path = save_events(tmp_path / "zeros.npz", zeros)  # deflates to almost nothing
    assert len(load_events(path)) == n
    monkeypatch.setenv("EVSPEC_MAX_EVENT_BYTES", str(10 * n))
    with pytest.raises(DataError, match=r"zeros.npz: x/y/t/p: decodes to 260,000 bytes, over the "
                                        r"200,000-byte limit"):
        load_events(path)
    np.save(tmp_path / "plain.npy", zeros.to_structured())
    with pytest.raises(DataError, match="over the 200,000-byte limit"):
        load_events(tmp_path / "plain.npy")
    monkeypatch.setenv("EVSPEC_MAX_EVENT_BYTES", "lots")
    with pytest.raises(ValueError, match="EVSPEC_MAX_EVENT_BYTES='lots': must be a whole number"):
        load_events(path)


def test_forged_member_header_is_refused(tmp_path: Path) -> None:
    good = save_events(tmp_path / "good.npz", EventStream(*EVENTS.values()))
    forged = tmp_path / "forged.npz"
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(forged, "w", zipfile.ZIP_DEFLATED) as dst:
        for name in src.namelist():
            data = src.read(name)
            if name == "t.npy":  # claims 2^40 timestamps over 64 bytes of data
                buf = io.BytesIO()
                np.lib.format.write_array_header_1_0(
                    buf, {"descr": "<i8", "fortran_order": False, "shape": (2**40,)})
                data = buf.getvalue() + np.arange(8, dtype=np.int64).tobytes()
            dst.writestr(name, data)
    with pytest.raises(DataError, match=r"forged.npz: t: the header promises 8,796,093,022,208"):
        load_events(forged)


def test_data_check_lists_every_bad_clip_in_one_pass(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    root.mkdir()
    loop: list = []
    loop.append(loop)
    research_npy(root / "bomb.npy", shared_list(40))
    research_npy(root / "loop.npy", loop)
    raw_pickle_npy(root / "deep.npy", deep_dicts(100_000))
    (root / "junk.npy").write_bytes(b"\x93NUMPY garbage")
    np.save(root / "good.npy", {**EVENTS}, allow_pickle=True)
    raw_pickle_npy(root / "evil.npy", b"\x80\x02cos\nsystem\n(S'true'\ntR.")
    names = ["bomb", "loop", "deep", "junk", "good", "evil"]
    clips = [ClipEntry(n, f"{n}.npy", None, None, "test", [QA("Q?")]) for n in names]
    path = save_manifest(root / "manifest.json", Manifest(clips, root, {}))
    start = time.perf_counter()
    problems = check_manifest(path, n_event_images=5)
    assert time.perf_counter() - start < 30
    assert sorted(Path(p.file).name for p in problems) == sorted(f"{n}.npy" for n in names
                                                                 if n != "good")
    assert "refused to load os.system" in str(problems[-1])
    from evspec.cli import app

    res = CliRunner().invoke(app, ["data", "check", str(path)])
    assert res.exit_code == 1 and "5 problem(s)" in res.output and "Traceback" not in res.output


def test_import_eventgpt_stays_inside_root_with_safe_ids(tmp_path: Path) -> None:
    from evspec.data.eventgpt_import import import_eventgpt
    from evspec.data.manifest import ManifestError

    root = tmp_path / "research"
    (root / "event_npy" / "seq").mkdir(parents=True)
    np.save(root / "event_npy" / "seq" / "a.npy", {**EVENTS}, allow_pickle=True)
    (tmp_path / "secret.npy").write_bytes(b"outside")
    conv = [{"from": "human", "value": "<event>\nWhat moves?"}, {"from": "gpt", "value": "A car."}]
    records = [
        {"id": "ok-1", "event_data": "seq/a.npy", "conversations": conv},
        {"id": "up", "event_data": "../../secret.npy", "conversations": conv},
        {"id": "abs", "event_data": str(tmp_path / "secret.npy"), "conversations": conv},
        {"id": "../../evil", "event_data": "seq/a.npy", "conversations": conv},
        {"id": "gone", "event_data": "seq/missing.npy", "conversations": conv},
        {"id": "/etc/x", "event_data": "/etc/passwd", "conversations": conv},
    ]
    js = tmp_path / "subset.json"
    js.write_text(json.dumps(records))
    with pytest.raises(ManifestError) as err:
        import_eventgpt(js, root, tmp_path / "m.json")
    text = str(err.value)
    assert [p.field for p in err.value.problems] == ["[1].event_data", "[2].event_data", "[3].id",
                                                     "[4].event_data", "[5].event_data", "[5].id"]
    assert "leads outside --root" in text and "not a safe clip id" in text
    assert "no such events file" in text and not (tmp_path / "m.json").exists()
    js.write_text(json.dumps(records[:1]))
    manifest = import_eventgpt(js, root, tmp_path / "m.json")
    assert [c.id for c in manifest.clips] == ["ok-1"]
    runner = CliRunner()
    from evspec.cli import app

    res = runner.invoke(app, ["data", "import-eventgpt", str(js), "--root", str(root), "--out",
                              str(tmp_path)])
    assert res.exit_code == 1 and f"error: --out {tmp_path}: is a folder" in res.output
