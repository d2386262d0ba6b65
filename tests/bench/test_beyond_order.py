"""benchmarks/beyond.py interleaves the configurations of its γ feature per request, so a
configuration's place in the order does not change its time."""

from __future__ import annotations

from types import SimpleNamespace

from bench_scripts import load_script

from evspec.decoding.stats import RequestStats, Result


def test_run_sets_rotates_the_order_and_keeps_the_fastest(monkeypatch):
    features = load_script("beyond_features", monkeypatch)
    calls: list[tuple[str, int]] = []
    seen: set[int] = set()

    def fn(name):
        def run(i, req):
            calls.append((name, i))
            stats = RequestStats(drafter=name, gamma=1)
            stats.total_ms = 10.0 + (
                50.0 if i not in seen else 0.0
            )  # the first run on a request is cold
            seen.add(i)
            return Result(tokens=[1], text="", stats=stats)

        return run

    s = SimpleNamespace(requests=["q0", "q1", "q2"], repeats=2, warmup=False)
    out = features.run_sets(s, {n: fn(n) for n in ("a", "b", "c")})
    firsts = [calls[k * 3][0] for k in range(3)]  # first configuration of each request, repeat 0
    assert firsts == ["a", "b", "c"]
    # with a second, re-rotated repeat and the fastest run kept, no configuration keeps the
    # cold first run: every kept time is the warm one
    assert {r.stats.total_ms for runs in out.values() for r in runs} == {10.0}
    assert [len(v) for v in out.values()] == [3, 3, 3]
