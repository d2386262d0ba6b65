"""The order-free harness: a configuration's place in a request's order does not change
its time, every timed run sees the same cache state, repeats keep the lower median."""

from __future__ import annotations

from collections import Counter, defaultdict

import pytest
from bench_fakes import FakeBackend, make_items

from evspec.bench.config import BenchConfig
from evspec.bench.harness import run_bench
from evspec.bench.records import read_records
from evspec.bench.summary import summarize

COLD_MS = 100.0  # what the first run on a clip pays on top (preprocess, vision, full prefill)


def _config(**kw) -> BenchConfig:
    base = dict(
        drafters=("none", "fast"), gammas=(2, 4), warmup=0, dataset="fake", hf_baseline=False
    )
    return BenchConfig(**{**base, **kw})


def _totals(run_dir) -> dict[tuple[str, int], dict[int, set[float]]]:
    """(drafter, γ) -> order position -> the total times measured there."""
    out: dict[tuple[str, int], dict[int, set[float]]] = defaultdict(lambda: defaultdict(set))
    for r in read_records(run_dir):
        out[(r["drafter"], r["gamma"])][r["order_position"][0]].add(r["timings"]["total_ms"])
    return out


@pytest.mark.parametrize("cache", ["warm", "cold"])
def test_position_in_the_order_does_not_change_a_time(tmp_path, cache):
    backend = FakeBackend(accept={"fast": 2}, cold_ms=COLD_MS)
    run_bench(_config(cache=cache), make_items(6), backend, tmp_path, progress=False)
    totals = _totals(tmp_path)
    for config, by_position in totals.items():
        # rotated: 3 configurations over 6 requests = each position twice
        assert sorted(by_position) == [0, 1, 2], config
        times = set().union(*by_position.values())
        assert len(times) == 1, f"{config}: time depends on its position: {dict(by_position)}"
    target = next(iter(totals[("none", 0)][0]))
    # warm: nobody pays the clip's first run; cold: everybody does
    assert target == 20.0 + 9 * 10.0 + (COLD_MS if cache == "cold" else 0.0)
    if cache == "cold":
        assert backend.cleared == 6 * 3  # before every timed run
    else:
        assert backend.cleared == 0
        assert len(backend.calls) == 2 * 6 * 3  # one untimed warm pass per clip
    # the speedup is the drafter's own, the same on every request
    fast = next(s for s in summarize(read_records(tmp_path)) if (s.drafter, s.gamma) == ("fast", 4))
    assert fast.vs_target.ci95[0] == pytest.approx(fast.vs_target.ci95[1])
    assert fast.vs_target.mor_ci95[0] == pytest.approx(fast.vs_target.mor_ci95[1])


def test_rotation_balances_positions_and_random_order_is_seeded(tmp_path):
    cfg = _config(drafters=("none", "a", "b"), gammas=(1,), hf_baseline=True)
    runs = cfg.plan()
    assert runs == [("none", 0), ("hf-generate", 0), ("a", 1), ("b", 1)]
    firsts = Counter(cfg.order_for(runs, i, f"r{i}")[0] for i in range(8))
    assert set(firsts.values()) == {2}  # every configuration first on 2 of 8 requests
    rnd = _config(drafters=("none", "a", "b"), gammas=(1,), order="random", seed=3)
    orders = [tuple(rnd.order_for(runs, i, f"r{i}")) for i in range(12)]
    assert orders == [tuple(rnd.order_for(runs, i, f"r{i}")) for i in range(12)]  # reproducible
    assert len(set(orders)) > 3 and all(sorted(o) == sorted(runs) for o in orders)
    assert orders != [
        tuple(
            _config(drafters=("none", "a", "b"), gammas=(1,), order="random", seed=4).order_for(
                runs, i, f"r{i}"
            )
        )
        for i in range(12)
    ]


class JitterBackend(FakeBackend):
    """Adds 0, 30, 60 ms to successive calls: repeats of one configuration differ."""

    def generate(self, request, drafter, **kw):
        result = super().generate(request, drafter, **kw)
        result.stats.total_ms += 30.0 * (len(self.calls) % 3)
        return result


def test_repeats_keep_the_lower_median_and_record_every_total(tmp_path):
    run_bench(
        _config(repeats=3, cache="cold"),
        make_items(2),
        JitterBackend(accept={"fast": 2}),
        tmp_path,
        progress=False,
    )
    recs = read_records(tmp_path)
    assert len(recs) == 2 * 3
    for r in recs:
        totals = r["timings"]["repeats_total_ms"]
        assert len(totals) == 3 and len(r["order_position"]) == 3
        assert r["timings"]["total_ms"] == sorted(totals)[1]
        assert r["cache"] == "cold" and r["order"] == "rotate"
    # the order is rotated again on every repeat
    assert any(len(set(r["order_position"])) > 1 for r in recs)


def test_forced_modes_get_their_reference_before_any_drafter_runs(tmp_path):
    """Acceptance-controlled with the drafter first in the order: an untimed reference pass."""
    backend = FakeBackend(accept={"fast": 2})
    run_bench(
        _config(controlled_alpha=0.5, cache="cold", drafters=("fast",), gammas=(2,)),
        make_items(2),
        backend,
        tmp_path,
        progress=False,
    )
    recs = read_records(tmp_path)
    assert all(r["status"] == "ok" for r in recs), [r.get("error") for r in recs]
    assert {r["order_position"][0] for r in recs if r["drafter"] == "fast"} == {0, 1}
    assert len(backend.calls) == 2 * 3  # an untimed target-only pass per request, then two timed


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        (dict(order="first"), "order"),
        (dict(cache="hot"), "cache"),
        (dict(repeats=0), "repeats"),
        (dict(hf_baselines=("compiled",)), "hf_baselines"),
        (dict(replay="t.json", controlled_alpha=0.5), "not both"),
        (dict(replay="t.json", schedule="pipelined"), "sequential"),
    ],
)
def test_fairness_settings_are_validated(kw, match):
    with pytest.raises(ValueError, match=match):
        _config(**kw)
