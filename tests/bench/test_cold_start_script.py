"""benchmarks/cold_start.py: a child process's timings, and the compile cache it points at."""

from __future__ import annotations

import os

from bench_scripts import load_script  # a sibling helper (tests/bench is on sys.path)

from evspec.models.fast.compile_cache import enable_compile_cache


def test_child_times_two_answers_and_the_table(monkeypatch):
    mod = load_script("cold_start", monkeypatch)
    args = mod.parse(["--target", "tiny-random", "--device", "cpu", "--new-tokens", "5"])
    row = mod.child(args)
    assert row["tokens"] == 5 and row["same_answer"]
    assert 0 < row["first_answer_s"] and 0 < row["load_s"] and row["first_answer_at"] > 0
    row.update(process="cold", process_to_first_answer_s=1.5)
    text = mod.table([row])
    assert "| 1 (cold) | 1.50 |" in text


def test_compile_cache_goes_to_one_folder_unless_the_user_chose(tmp_path, monkeypatch):
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    monkeypatch.delenv("TRITON_CACHE_DIR", raising=False)
    monkeypatch.setenv("EVSPEC_CACHE_DIR", str(tmp_path / "c"))
    dirs = enable_compile_cache()
    assert dirs == {"inductor": str(tmp_path / "c" / "inductor"),
                    "triton": str(tmp_path / "c" / "triton")}
    assert os.path.isdir(dirs["inductor"]) and os.path.isdir(dirs["triton"])
    monkeypatch.setenv("TRITON_CACHE_DIR", str(tmp_path / "mine"))
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR")
    assert enable_compile_cache(tmp_path / "other")["triton"] == str(tmp_path / "mine")
