"""Bounded fuzzing of the event readers and the manifest loader (hypothesis, fixed budget).

Whatever the bytes or the JSON, a reader either returns valid data or raises its named
error (``DataError`` / ``ManifestError``): never another exception, never a hang.  Inputs
are mutations of valid files (flipped, cut and inserted bytes) and generated structures.
"""

from __future__ import annotations

import io
import json
import pickle
import tempfile
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from evspec.data.clipio import load_events, save_events
from evspec.data.errors import DataError
from evspec.data.events import EventStream
from evspec.data.manifest import ManifestError, check_manifest, load_manifest, parse_manifest

FUZZ = settings(max_examples=60, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow])


def _stream() -> EventStream:
    rng = np.random.default_rng(0)
    return EventStream(rng.integers(0, 32, 40), rng.integers(0, 24, 40), np.arange(40) * 100,
                       rng.integers(0, 2, 40), (32, 24))


def _valid_files() -> dict[str, bytes]:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        stream = _stream()
        save_events(root / "a.npz", stream)
        save_events(root / "b.npz", stream, compress=False)
        np.save(root / "c.npy", {"x": stream.x, "y": stream.y, "t": stream.t, "p": stream.p,
                                 "time_start": 0, "sensor_size": (32, 24)}, allow_pickle=True)
        np.save(root / "d.npy", stream.to_structured())
        return {p.suffix + p.stem: p.read_bytes() for p in root.iterdir()}


VALID = _valid_files()

# a mutation: (position as a fraction of the length, kind, bytes)
mutation = st.tuples(st.floats(0, 1), st.sampled_from(["flip", "cut", "insert", "set"]),
                     st.binary(min_size=1, max_size=8))


def _mutate(data: bytes, edits: list[tuple[float, str, bytes]]) -> bytes:
    buf = bytearray(data)
    for where, kind, blob in edits:
        i = min(int(where * len(buf)), max(len(buf) - 1, 0))
        if kind == "flip" and buf:
            buf[i] ^= blob[0] or 1
        elif kind == "cut":
            del buf[i : i + 1 + blob[0] * 4]
        elif kind == "insert":
            buf[i:i] = blob
        elif buf:
            buf[i : i + len(blob)] = blob
    return bytes(buf)


def _load(suffix: str, data: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"f{suffix}"
        path.write_bytes(data)
        try:
            stream = load_events(path)
        except DataError:
            return
        assert isinstance(stream, EventStream) and len(stream.x) == len(stream.t)


@settings(FUZZ, max_examples=240)
@given(name=st.sampled_from(sorted(VALID)), edits=st.lists(mutation, min_size=1, max_size=4))
def test_mutated_event_files_load_or_raise_data_error(name: str, edits) -> None:
    _load(name[:4], _mutate(VALID[name], edits))


plain = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8)
    | st.binary(max_size=8) | st.builds(np.arange, st.integers(0, 5)),
    lambda inner: st.lists(inner, max_size=4) | st.tuples(inner, inner)
    | st.dictionaries(st.text(max_size=4), inner, max_size=4)
    | st.dictionaries(st.integers(), inner, max_size=2),
    max_leaves=20,
)


@FUZZ
@given(fields=st.dictionaries(st.sampled_from(["x", "y", "t", "p", "sensor_size", "width", "height",
                                               "meta"]), plain, max_size=8))
def test_generated_research_dicts_load_or_raise_data_error(fields) -> None:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "|O", "fortran_order": False, "shape": ()})
    pickle.dump(fields, buf, protocol=4)
    _load(".npy", buf.getvalue())


json_value = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=30,
)
clip = st.fixed_dictionaries({}, optional={
    "id": json_value | st.text(max_size=12), "events": json_value | st.just("e.npz"),
    "video": json_value | st.just("v.mp4"),
    "window_us": json_value | st.lists(st.integers(), max_size=3),
    "split": json_value | st.sampled_from(["train", "val", "test"]),
    "questions": json_value | st.lists(st.fixed_dictionaries(
        {"question": json_value | st.text(max_size=10)}, optional={"answer": json_value}),
        max_size=2),
})
manifest = st.fixed_dictionaries({}, optional={
    "format": st.just("evspec-manifest") | json_value, "version": st.just(1) | json_value,
    "meta": json_value, "clips": st.lists(clip, max_size=4) | json_value,
}) | json_value


@FUZZ
@given(raw=manifest)
def test_generated_manifests_load_or_raise_manifest_error(raw) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "manifest.json"
        path.write_text(json.dumps(raw))
        _, problems = parse_manifest(raw, path)
        try:
            loaded = load_manifest(path)
        except ManifestError as exc:
            assert exc.problems and problems
        else:
            assert not problems and all(isinstance(c.id, str) for c in loaded.clips)
        assert all(str(p) for p in check_manifest(path))  # a list of problems, never a raise
