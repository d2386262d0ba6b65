"""Append-only JSONL records: durability, torn-tail repair, last-record-wins."""

from __future__ import annotations

import json

import pytest

from evspec.bench.records import (
    BENCH_FIELDS,
    CorruptRecordWarning,
    DuplicateRecordWarning,
    RecordLog,
    read_json,
    read_records,
    record_key,
    write_json_atomic,
)


def test_append_and_read_back(tmp_path):
    with RecordLog.open(tmp_path) as log:
        log.append({"key": "a|none|0", "status": "ok", "x": 1.5})
        log.append({"key": "b|none|0", "status": "failed"})
        assert log.done("a|none|0") and log.done("b|none|0")
        assert not log.done("b|none|0", retry_failed=True)
        assert not log.done("c|none|0")
    recs = read_records(tmp_path)
    assert [r["key"] for r in recs] == ["a|none|0", "b|none|0"]
    assert recs[0]["x"] == 1.5
    # one line per record
    assert len((tmp_path / "records.jsonl").read_text().splitlines()) == 2


def test_torn_last_line_is_cut_on_open(tmp_path):
    with RecordLog.open(tmp_path) as log:
        log.append({"key": "a|none|0", "status": "ok"})
    path = tmp_path / "records.jsonl"
    good = path.read_bytes()
    with open(path, "ab") as f:  # a kill in the middle of a write
        f.write(b'{"key": "b|none|0", "stat')
    assert [r["key"] for r in read_records(tmp_path)] == ["a|none|0"]  # readers ignore it
    with RecordLog.open(tmp_path) as log:
        assert log.repaired_bytes == len(b'{"key": "b|none|0", "stat')
        assert path.read_bytes() == good
        log.append({"key": "b|none|0", "status": "ok"})
    assert [r["key"] for r in read_records(tmp_path)] == ["a|none|0", "b|none|0"]
    for line in path.read_text().splitlines():
        json.loads(line)


def test_corrupt_middle_line_is_skipped_then_quarantined(tmp_path):
    path = tmp_path / "records.jsonl"
    path.write_text('{"key": "a"}\nnot json\n{"key": "b"}\n')
    one_line = r"records.jsonl: 1 corrupt record line\(s\) \(lines 2;"
    with pytest.warns(CorruptRecordWarning, match=one_line):
        assert [r["key"] for r in read_records(tmp_path)] == ["a", "b"]
    with pytest.warns(CorruptRecordWarning, match="quarantine.jsonl; they are measured again"):
        with RecordLog.open(tmp_path) as log:
            assert len(log) == 2
    assert path.read_text() == '{"key":"a"}\n{"key":"b"}\n'
    assert (tmp_path / "records.quarantine.jsonl").read_text() == "not json\n"
    with pytest.warns(CorruptRecordWarning, match=r"line 1: no 'request_id' \(str\)"):
        assert read_records(tmp_path, fields=BENCH_FIELDS) == []


def test_last_record_per_key_wins(tmp_path):
    with RecordLog.open(tmp_path) as log:
        log.append({"key": "a|x|1", "status": "failed"})
        log.append({"key": "b|x|1", "status": "ok"})
        log.append({"key": "a|x|1", "status": "ok"})
        assert log.get("a|x|1")["status"] == "ok" and len(log) == 2
    assert [(r["key"], r["status"]) for r in read_records(tmp_path)] == [("a|x|1", "ok"), ("b|x|1", "ok")]
    assert len(read_records(tmp_path, latest_only=False)) == 3


def test_non_finite_floats_become_null(tmp_path):
    with RecordLog.open(tmp_path) as log:
        log.append({"key": "a", "v": float("nan"), "w": [float("inf"), 1.0]})
    assert read_records(tmp_path)[0] == {"key": "a", "v": None, "w": [None, 1.0]}
    write_json_atomic(tmp_path / "x.json", {"v": float("nan")})
    assert read_json(tmp_path / "x.json") == {"v": None}
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_record_key_rejects_separator():
    assert record_key("clip#0", "eventgpt", 4) == "clip#0|eventgpt|4"
    with pytest.raises(ValueError, match="must not contain"):
        record_key("a|b", "none", 0)


def test_missing_records_explains(tmp_path):
    with pytest.raises(FileNotFoundError, match="evspec bench"):
        read_records(tmp_path)


def test_a_measurement_recorded_ok_twice_is_reported(tmp_path):
    with RecordLog.open(tmp_path) as log:
        log.append({"key": "a|x|1", "status": "failed"})
        log.append({"key": "a|x|1", "status": "ok", "v": 1})  # a retry: not a duplicate
        log.append({"key": "b|x|1", "status": "ok", "v": 1})
    assert len(read_records(tmp_path)) == 2
    with RecordLog.open(tmp_path) as log:
        log.append({"key": "b|x|1", "status": "ok", "v": 2})
    twice = r"1 measurement\(s\) recorded ok more than once \(e.g. b\|x\|1\)"
    with pytest.warns(DuplicateRecordWarning, match=twice):
        assert read_records(tmp_path)[1]["v"] == 2
