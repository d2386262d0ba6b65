"""Loaders round-trip; bad files give errors naming the file and the problem."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest

from evspec.data.clipio import load_events, save_events
from evspec.data.errors import DataError
from evspec.data.events import EventStream
from evspec.data.research_npy import load_research_npy, read_research_dict


def assert_same(a: EventStream, b: EventStream) -> None:
    for k in "xytp":
        assert np.array_equal(getattr(a, k), getattr(b, k)), k
        assert getattr(a, k).dtype == getattr(b, k).dtype, k
    assert a.sensor_size == b.sensor_size


# -- own format ------------------------------------------------------------------------------
@pytest.mark.parametrize("compress", [True, False])
def test_npz_round_trip(tmp_path, make_stream, compress):
    s = make_stream(1000, 64, 48, seed=2)
    path = save_events(tmp_path / "sub" / "clip.npz", s, compress=compress)
    back = load_events(path)
    assert_same(back, s)
    assert back.source == str(path)
    assert [p.name for p in path.parent.iterdir()] == ["clip.npz"]  # no temp file left
    with np.load(path, allow_pickle=False) as z:  # readable without pickle
        assert str(z["format"]) == "evspec-events"


def test_atomic_writes_leave_nothing_on_failure_and_use_normal_permissions(tmp_path, make_stream):
    from evspec.data.atomic import atomic_dir, atomic_file

    path = save_events(tmp_path / "c.npz", make_stream(10, 4, 4))
    umask = os.umask(0o022)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask
    with pytest.raises(RuntimeError):
        with atomic_file(tmp_path / "c.npz") as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("interrupted")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.npz"]  # old file intact
    assert load_events(path).x.shape == (10,)
    with pytest.raises(RuntimeError):
        with atomic_dir(tmp_path / "d") as tmp:
            (tmp / "a").write_text("x")
            raise RuntimeError("interrupted")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.npz"]


def test_npz_unknown_sensor_and_window(tmp_path, make_stream):
    s = make_stream(300, 10, 10, sensor=False, span_us=1000)
    path = save_events(tmp_path / "c.npz", s)
    assert load_events(path).sensor_size is None
    w = load_events(path, window_us=(100, 300))
    assert np.array_equal(w.t, s.t[(s.t >= 100) & (s.t < 300)])
    assert load_events(path, sensor_size=(10, 10)).sensor_size == (10, 10)


def test_npz_truncated_and_corrupted(tmp_path, make_stream):
    path = save_events(tmp_path / "c.npz", make_stream(2000, 30, 30))
    data = path.read_bytes()
    trunc = tmp_path / "trunc.npz"
    trunc.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError) as err:
        load_events(trunc)
    assert err.value.file == str(trunc) and "corrupted or truncated" in err.value.reason
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"not a zip at all" * 10)
    with pytest.raises(DataError, match="garbage.npz: file: corrupted"):
        load_events(garbage)


def test_npz_missing_members_and_wrong_format(tmp_path):
    p = tmp_path / "partial.npz"
    np.savez(p, x=np.zeros(2, np.uint16), t=np.zeros(2, np.int64))
    with pytest.raises(DataError) as err:
        load_events(p)
    assert "missing member" in err.value.reason and "p" in err.value.field
    q = tmp_path / "other.npz"
    np.savez(q, format=np.array("something"), version=np.array(1), x=np.zeros(0), y=np.zeros(0),
             t=np.zeros(0), p=np.zeros(0), sensor_size=np.zeros(2))
    with pytest.raises(DataError, match="format: is 'something'"):
        load_events(q)


def test_load_events_bad_paths(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_events(tmp_path / "nope.npz")
    (tmp_path / "a.txt").write_text("x")
    with pytest.raises(DataError, match="unknown events suffix"):
        load_events(tmp_path / "a.txt")
    with pytest.raises(ValueError, match=".npz"):
        save_events(tmp_path / "a.bin", EventStream.empty())


# -- the research's pickled-dict .npy ---------------------------------------------------------
def research_dict(s: EventStream) -> dict:
    return {
        "x": s.x.astype(np.int64), "y": s.y.astype(np.int64), "t": s.t.astype(np.float64),
        "p": s.p.astype(np.int8), "time_start": np.float64(s.t[0]), "time_end": int(s.t[-1]),
        "duration_ms": 50.0, "num_events": len(s), "sequence": "zurich_city_00_a",
    }


def test_research_npy_round_trip(tmp_path, make_stream):
    s = make_stream(400, 640, 480, seed=4, sensor=False)
    path = tmp_path / "000000.npy"
    np.save(path, research_dict(s))  # exactly how the research wrote its clips
    back, meta = load_research_npy(path)
    assert_same(back, s)
    assert meta["num_events"] == 400 and meta["sequence"] == "zurich_city_00_a"
    assert_same(load_events(path), s)  # dispatch on suffix


def test_research_npy_sensor_size_from_metadata(tmp_path, make_stream):
    s = make_stream(50, 20, 10, sensor=False)
    d = research_dict(s) | {"width": 20, "height": 10}
    np.save(tmp_path / "a.npy", d)
    assert load_events(tmp_path / "a.npy").sensor_size == (20, 10)


def test_structured_npy(tmp_path, make_stream):
    s = make_stream(60, 9, 9, sensor=False)
    np.save(tmp_path / "tonic.npy", s.to_structured())
    assert_same(load_events(tmp_path / "tonic.npy"), s)
    np.save(tmp_path / "plain.npy", np.zeros((5, 4)))
    with pytest.raises(DataError, match="no named fields"):
        load_events(tmp_path / "plain.npy")


class _Payload:
    """Unpickling this would create ``marker`` (a harmless stand-in for arbitrary code)."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickle_that_would_run_code_is_refused_and_nothing_runs(tmp_path, make_stream):
    s = make_stream(10, 5, 5)
    evil = tmp_path / "evil.npy"
    marker = tmp_path / "code_ran"
    np.save(evil, research_dict(s) | {"meta": _Payload(str(marker))}, allow_pickle=True)
    # control: the payload is live -- numpy's own pickle loading would run it
    control = tmp_path / "control_ran"
    np.save(tmp_path / "control.npy", {"meta": _Payload(str(control))}, allow_pickle=True)
    np.load(tmp_path / "control.npy", allow_pickle=True)
    assert control.exists()
    control.unlink()
    with pytest.raises(DataError) as err:
        load_events(evil)
    assert err.value.file == str(evil) and err.value.field == "pickle"
    assert "refused" in err.value.reason
    assert not marker.exists()  # nothing ran


def test_pickle_with_os_system_is_refused(tmp_path):
    marker = tmp_path / "ran"

    class Shell:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "shell.npy"
    np.save(path, {"x": Shell()}, allow_pickle=True)
    with pytest.raises(DataError, match="refused to load"):
        read_research_dict(path)
    assert not marker.exists()


def test_research_npy_missing_keys(tmp_path):
    p = tmp_path / "k.npy"
    np.save(p, {"x": np.zeros(3), "y": np.zeros(3), "duration_ms": 5})
    with pytest.raises(DataError) as err:
        load_events(p)
    assert err.value.field == "t,p" and "missing event key" in err.value.reason


def test_research_npy_truncated_and_not_a_dict(tmp_path, make_stream):
    good = tmp_path / "g.npy"
    np.save(good, research_dict(make_stream(500, 9, 9)))
    data = good.read_bytes()
    bad = tmp_path / "t.npy"
    bad.write_bytes(data[: len(data) - 300])
    with pytest.raises(DataError, match="t.npy: pickle: corrupted or truncated"):
        load_events(bad)
    head = tmp_path / "h.npy"
    head.write_bytes(b"\x93NUMPY\x01")
    with pytest.raises(DataError, match="not a valid .npy"):
        load_events(head)
    lst = tmp_path / "l.npy"
    np.save(lst, np.array([1, "a"], dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match="expected a dict"):
        load_events(lst)


def test_research_npy_refuses_non_plain_objects(tmp_path):
    # a set is built by pickle opcodes without any import, so the tree check must catch it
    p = tmp_path / "s.npy"
    with open(p, "wb") as f:
        np.lib.format.write_array_header_1_0(
            f, {"descr": "|O", "fortran_order": False, "shape": ()}
        )
        pickle.dump({"x": {1, 2}}, f, protocol=4)
    with pytest.raises(DataError, match="unexpected set"):
        read_research_dict(p)


# -- DSEC h5 -------------------------------------------------------------------------------
h5py = pytest.importorskip("h5py")


def _dsec_file(tmp_path, make_stream, compress):
    from evspec.data.dsec_h5 import write_dsec_events_h5

    if compress:
        pytest.importorskip("hdf5plugin")
    s = make_stream(20_000, 640, 480, seed=7, t0=5_000_000_000, span_us=3_000_000)
    path = tmp_path / "events.h5"
    write_dsec_events_h5(path, s, t_offset_us=5_000_000_000 - 1234, compress=compress)
    return s, path


@pytest.mark.parametrize("compress", [False, True])
def test_dsec_h5_windows(tmp_path, make_stream, compress):
    from evspec.data.dsec_h5 import DsecEventsFile

    s, path = _dsec_file(tmp_path, make_stream, compress)
    with DsecEventsFile(path) as f:
        assert len(f) == len(s)
        assert (f.t_first_us, f.t_last_us) == s.t_range
        for t0, t1 in [(s.t[0], s.t[0] + 1_000_000), (5_000_500_123, 5_001_700_999),
                       (5_002_999_500, 5_004_000_000), (0, 10), (s.t[100], s.t[100])]:
            got = f.read_window(int(t0), int(t1))
            assert_same(got, s.window_time(int(t0), int(t1)))
        assert_same(f.read_all(), s)
    assert_same(load_events(path, window_us=(5_001_000_000, 5_001_050_000)),
                s.window_time(5_001_000_000, 5_001_050_000))


def test_dsec_h5_corrupted_and_missing(tmp_path, make_stream):
    s, path = _dsec_file(tmp_path, make_stream, False)
    data = path.read_bytes()
    trunc = tmp_path / "trunc.h5"
    trunc.write_bytes(data[:2000])
    with pytest.raises(DataError) as err:
        load_events(trunc)
    assert err.value.file == str(trunc)
    noise = tmp_path / "noise.h5"
    noise.write_bytes(os.urandom(4096))
    with pytest.raises(DataError, match="not a readable HDF5"):
        load_events(noise)
    partial = tmp_path / "partial.h5"
    with h5py.File(partial, "w") as f:
        f.create_dataset("events/x", data=np.zeros(3, np.uint16))
    with pytest.raises(DataError) as err:
        load_events(partial)
    assert "missing DSEC dataset" in err.value.reason and "ms_to_idx" in err.value.field


def test_dsec_h5_inconsistent_ms_to_idx(tmp_path, make_stream):
    s, path = _dsec_file(tmp_path, make_stream, False)
    with h5py.File(path, "r+") as f:
        f["ms_to_idx"][1000:] = 0  # an index table that no longer brackets the events
    with pytest.raises(DataError, match="ms_to_idx: inconsistent"):
        load_events(path, window_us=(s.t[0] + 1_500_000, s.t[0] + 1_600_000))
