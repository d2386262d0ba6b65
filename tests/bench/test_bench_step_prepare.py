"""Step shapes captured up front (issue: CUDA graph captures inside timed rounds).

On CPU there are no graphs, so the capture is replaced by a recording fake that replays
the eager step: ``StepRunner.prepare`` must make every shape ``run`` will need ready
(no capture afterwards), leave the valid cache rows alone and keep results exact; the
bench warm-up must ask every fast model for every step size 1..γ+1.  The last test runs
the real thing on CUDA (skipped on CPU)."""

from __future__ import annotations

import pytest
import torch
from bench_models import TinyLM, random_request

from evspec.bench.backend import EngineBackend
from evspec.bench.config import BenchConfig
from evspec.bench.harness import run_bench
from evspec.bench.run import ModelSpec, bench
from evspec.decoding.drafters import ModelDrafter
from evspec.decoding.engine import generate
from evspec.models.fast.graphs import StepRunner
from evspec.models.fast.llama import FastLlama
from evspec.models.fast.runtime import FastRuntime


def _runner(seed: int = 0, graphs_faked: bool = False) -> tuple[StepRunner, list[tuple[str, int, int]]]:
    lm = TinyLM(seed=seed)
    fast = FastLlama(lm.decoder, lm.lm_head)
    with torch.inference_mode():
        cache = fast.new_cache(64, slack=8)  # capacity 72
    runner = StepRunner(fast, cache, buckets=(1, 2, 4, 8), kv_granularity=16, cuda_graphs=False)
    captured: list[tuple[str, int, int]] = []
    if graphs_faked:  # a "graph" that records its capture and replays the eager step
        runner.cuda_graphs = True

        def capture(kind, bucket, kv_rows):
            captured.append((kind, bucket, kv_rows))
            logits, hidden = runner._eager_step(kind, bucket, kv_rows)

            class Replay:
                def replay(self):
                    new_logits, new_hidden = runner._eager_step(kind, bucket, kv_rows)
                    logits.copy_(new_logits)
                    hidden.copy_(new_hidden)

            return Replay(), logits, hidden

        runner._capture = capture  # type: ignore[method-assign]
    return runner, captured


def test_step_shapes_by_hand():
    runner, _ = _runner()
    # size 1 -> bucket 1, size 3 -> bucket 4; starts 10..40 end at 11..44: kv rows 16, 32, 48
    assert runner.step_shapes([1, 3], 10, 40) == [(1, 16), (1, 32), (1, 48), (4, 16), (4, 32), (4, 48)]
    assert runner.step_shapes([8], 60, 100) == []  # 8 tokens never fit after position 56
    assert runner.step_shapes([8], 50, 100) == [(8, 64)]  # starts 50..56: rows 58..64 -> 64
    assert runner.step_shapes([1], 63, 63) == [(1, 64)]
    with pytest.raises(ValueError, match="start <= upto"):
        runner.step_shapes([1], 5, 4)
    with pytest.raises(ValueError, match=">= 1"):
        runner.step_shapes([0], 0, 4)


def test_step_shapes_cover_every_planned_step():
    runner, _ = _runner()
    start, upto, sizes = 5, 50, range(1, 8)
    shapes = set(runner.step_shapes(sizes, start, upto))
    planned = {runner.plan(t, p) for t in sizes for p in range(start, upto + 1) if p + t <= 64}
    assert planned == shapes


def test_prepare_captures_every_shape_up_front_and_keeps_results_exact():
    runner, captured = _runner(seed=1, graphs_faked=True)
    reference, _ = _runner(seed=1)  # eager, same weights
    prompt = torch.randint(3, 40, (12,), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        for r in (runner, reference):
            r.model.forward(r.cache, 0, tokens=prompt)
            r.cache.advance(12)
        rows = runner.cache.k[:, :, :12].clone()
        made = runner.prepare(range(1, 6), 12, 40, scratch=12)
    assert made == runner.step_shapes(range(1, 6), 12, 40)
    # buckets 1, 2, 4 (sizes 1-4) x kv rows 16/32/48, bucket 8 (size 5: rows 20..48) x 32/48
    assert [s[1:] for s in captured] == made and len(made) == 11
    assert torch.equal(runner.cache.k[:, :, :12], rows)  # the prompt's rows were not touched
    assert runner.prepare(range(1, 6), 12, 40, scratch=12) == []  # nothing left to capture
    # a request: rounds of varying sizes, the shorter last rounds included; no capture now
    gen = torch.Generator().manual_seed(1)
    with torch.inference_mode():
        for t in (5, 3, 5, 1, 2, 4, 1):
            start = runner.cache.length
            feed = torch.randint(3, 40, (t,), generator=gen)
            got, _ = runner.run(feed, start)
            want, _ = reference.run(feed, start)
            assert torch.allclose(got, want, atol=1e-5)
            runner.cache.advance(t)
            reference.cache.advance(t)
    assert len(captured) == 11 and runner.stats.replays > 0


def test_prepare_is_a_no_op_for_eager_steps():
    runner, _ = _runner()
    assert runner.prepare(range(1, 5), 0, 30, scratch=0) == []


def test_runtime_prepare_steps_refuses_oversized_steps():
    lm = TinyLM()
    fast = lm.enable_fast(max_score_tokens=4)
    with pytest.raises(ValueError, match="max_score_tokens"):
        fast.prepare_steps(range(1, 6), start=0, upto=10)
    assert fast.prepare_steps(range(1, 5), start=0, upto=10) == 0  # CPU: nothing to capture


def test_bench_warm_up_prepares_every_step_size(tmp_path, monkeypatch):
    calls: list[tuple[int, list[int], int, int, bool]] = []
    original = FastRuntime.prepare_steps

    def spy(self, sizes, *, start, upto, greedy=False):
        sizes = list(sizes)
        calls.append((id(self), sizes, start, upto, greedy))
        return original(self, sizes, start=start, upto=upto, greedy=greedy)

    monkeypatch.setattr(FastRuntime, "prepare_steps", spy)
    spec = ModelSpec(target="tiny-random", device="cpu", fast=True)
    cfg = BenchConfig(drafters=("none", "eventgpt"), gammas=(1, 3), max_new_tokens=6, warmup=1,
                      hf_baseline=False, dataset="random:2")
    from evspec.bench.run import load_backend

    backend = load_backend(spec, cfg.drafters)
    bench(cfg, tmp_path / "run", spec, backend=backend, report=False, progress=False)
    runtimes = {id(backend.target.fast): "target", id(backend.draft_model.fast): "draft"}
    asked = {runtimes[c[0]]: c for c in calls}
    assert set(asked) == {"target", "draft"} and len(calls) == 2  # once per model, before timing
    for _, sizes, start, upto, _ in asked.values():
        assert sizes == [1, 2, 3, 4]  # every score size up to γ_max + 1
        assert 0 <= start < upto and upto - start >= cfg.max_new_tokens + 3
    assert asked["target"][4] and not asked["draft"][4]  # the target's greedy chains (target-only runs)


def test_bench_warm_up_prepares_drafters_with_their_own_steps(tmp_path, monkeypatch):
    """Drafters with fixed-shape steps of their own (the draft heads on the fast engine)
    are asked to make them ready once, for the largest γ, after the warm-up runs."""
    from evspec.decoding.drafters.prompt_lookup import PromptLookupDrafter

    asked: list[int] = []
    monkeypatch.setattr(PromptLookupDrafter, "prepare_steps", lambda self, g: asked.append(g), raising=False)
    spec = ModelSpec(target="tiny-random", device="cpu", fast=True)
    cfg = BenchConfig(drafters=("none", "prompt-lookup"), gammas=(2, 5), max_new_tokens=6, warmup=1,
                      hf_baseline=False, dataset="random:2")
    bench(cfg, tmp_path / "run", spec, report=False, progress=False)
    assert asked == [5]


def test_fake_backends_without_prepare_steps_still_warm_up(tmp_path):
    from bench_fakes import FakeBackend, make_items

    cfg = BenchConfig(drafters=("none", "fast"), gammas=(2,), warmup=1, dataset="fake", hf_baseline=False)
    out = run_bench(cfg, make_items(2), FakeBackend(accept={"fast": 2}), tmp_path, progress=False)
    assert out.written == 4 and out.failed == 0


class CudaTinyLM(TinyLM):
    """TinyLM on the GPU (its prompt ids follow the weights)."""

    def __init__(self, **kw) -> None:
        super().__init__(**kw)
        self.model.to("cuda")

    def prefill(self, request, *, return_hidden=False):
        ids = self.prompt_ids(request)
        with torch.inference_mode():
            emb = self.decoder.embed_tokens(ids.to(self.device))  # [L, H]
        return self._prefill_embeds(emb, ids, return_hidden=return_hidden, timings={})


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
def test_cuda_no_graph_capture_inside_timed_runs():
    """After the bench's prepare, requests with other prompt lengths, γ <= 3 and rounds
    drafting fewer near the end capture no new graph (the H200 symptom: 101-165 ms rounds)."""
    target = CudaTinyLM(seed=0)
    target.enable_fast(max_score_tokens=8, kv_granularity=16)
    assert target.fast.config.cuda_graphs
    backend = EngineBackend(target)
    drafter = ModelDrafter(target, name="self")
    generate(target, random_request(0), drafter, gamma=3, max_new_tokens=12)  # the warm-up run
    made = backend.prepare_steps(random_request(0), max_gamma=3, max_new_tokens=24)
    before = target.fast.stats["graphs"]
    assert made["target"] > 0 and before > 0
    for i in range(1, 6):
        ref = generate(target, random_request(i), None, max_new_tokens=24).tokens
        for gamma in (1, 2, 3):
            assert generate(target, random_request(i), drafter, gamma=gamma, max_new_tokens=24).tokens == ref
    assert target.fast.stats["graphs"] == before


def test_compile_needs_fast_and_reaches_both_models():
    """``--compile`` without ``--fast`` is refused; with it both models compile lazily (at
    their first step, inside the bench warm-up) and the run records it."""
    from evspec.bench.run import load_backend

    with pytest.raises(ValueError, match="add --fast"):
        ModelSpec(target="tiny-random", device="cpu", compile=True)
    spec = ModelSpec(target="tiny-random", device="cpu", fast=True, compile=True)
    backend = load_backend(spec, ("eventgpt",), score_sizes=(7,))
    for model in (backend.target, backend.draft_model):
        assert model.fast.config.compile and not model.fast.stats["compiled_buckets"]  # compiled at first use
    # exact numerics off the Triton kernels: every step on one row bucket (one compile)
    assert backend.target.fast.config.step_buckets == (16,) and backend.info["exact"] is True
    assert backend.draft_model.fast.config.step_buckets == (16,)
    assert backend.info["compile"] is True
    plain = load_backend(ModelSpec(target="tiny-random", device="cpu", fast=True), ())
    assert "compile" not in plain.info and not plain.target.fast.config.compile
    assert "kernels" not in plain.info and plain.target.fast.config.kernels == "torch"
    with pytest.raises(ValueError, match="add --fast"):
        ModelSpec(target="tiny-random", device="cpu", kernels="triton")
    with pytest.raises(ValueError, match="--kernels must be"):
        ModelSpec(target="tiny-random", device="cpu", fast=True, kernels="cuda")
