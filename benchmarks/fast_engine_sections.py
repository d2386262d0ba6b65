"""The fast-engine benchmark's sections (one function per section of ``fast_engine.py``'s
``--sections``; see that module's docstring for what each measures) and ``RUNNERS``."""

from __future__ import annotations

import statistics
import threading
import time
import traceback
from typing import Any, Callable

import torch

from evspec.decoding.drafters import ModelDrafter
from evspec.decoding.engine import generate
from evspec.models.fast.step_attention import ATTENTION_KINDS

from fast_engine_bench import QUESTIONS, VARIANTS, Bench, fast_stats, match_rate, median_ms, step_ms, timed_ms


def sec_correctness(b: Bench) -> dict[str, Any]:
    n = b.args.check_tokens
    out: dict[str, Any] = {}
    for i in range(b.args.check_requests):
        req = b.request(i)
        b.mode(b.target, "dynamic")
        ref = generate(b.target, req, None, max_new_tokens=n).tokens
        b.mode(b.target, "fast_graphs")
        fast = generate(b.target, req, None, max_new_tokens=n).tokens
        selfd = generate(b.target, req, ModelDrafter(b.target, name="self"), gamma=4, max_new_tokens=n).tokens
        b.mode(b.target, "fast_graphs", prefix=True)
        generate(b.target, b.request(i + 1, clip="check"), None, max_new_tokens=2)  # fills the prefix
        hit = generate(b.target, b.request(i, clip="check"), None, max_new_tokens=n)
        out[f"request{i}"] = {
            "fast_vs_dynamic": match_rate(ref, fast),
            "self_draft_vs_fast": match_rate(fast, selfd),
            "prefix_hit_vs_fast": match_rate(fast, hit.tokens),
        }
    rates = [v[k]["match_rate"] for v in out.values() for k in v]
    out["min_match_rate"] = min(rates)
    return out


def _hf_ms_per_token(b: Bench, cache_impl: str | None) -> dict[str, Any]:
    n = b.args.hf_tokens
    req = b.request(0)
    warm_ms = timed_ms(b, lambda: b.target.hf_generate(req, n, cache_implementation=cache_impl))[0]
    full, one, counts = [], [], []
    for _ in range(b.args.hf_repeats):
        toks, ms = b.target.hf_generate(req, n, cache_implementation=cache_impl)
        full.append(ms)
        counts.append(len(toks))
        one.append(b.target.hf_generate(req, 1, cache_implementation=cache_impl)[1])
    tokens = min(counts)
    return {"warmup_ms": warm_ms, "total_ms": statistics.median(full), "first_token_ms": statistics.median(one),
            "new_tokens": tokens,
            "ms_per_token": (statistics.median(full) - statistics.median(one)) / max(tokens - 1, 1)}


def sec_hf(b: Bench) -> dict[str, Any]:
    b.mode(b.target, "dynamic")
    return _hf_ms_per_token(b, None)


def sec_hf_static(b: Bench) -> dict[str, Any]:
    if b.device.type != "cuda":
        return {"skipped": "HF static cache compiles the forward: CUDA only here"}
    b.mode(b.target, "dynamic")
    return _hf_ms_per_token(b, "static")


def sec_dynamic(b: Bench) -> dict[str, Any]:
    b.mode(b.target, "dynamic")
    return step_ms(b, b.target, b.request(0), [1])


def sec_fast_eager(b: Bench) -> dict[str, Any]:
    b.mode(b.target, "fast_eager")
    return {**step_ms(b, b.target, b.request(0), [1]), "fast": fast_stats(b.target)}


def sec_fast_graphs(b: Bench) -> dict[str, Any]:
    """Decode and score steps with graphs, for every attention kind (the chosen
    ``--attention`` first, at the top level; the others under ``other_attention.<kind>``)."""
    out: dict[str, Any] = {"other_attention": {}}
    for attention in (b.args.attention, *[k for k in ATTENTION_KINDS if k != b.args.attention]):
        try:
            b.mode(b.target, f"fast_graphs@{attention}")
            res = step_ms(b, b.target, b.request(0), [1, *b.score_sizes])
        except Exception as exc:  # another kind failing (e.g. a kernel that does not build) is recorded
            if attention == b.args.attention:
                raise
            b.modes.pop(id(b.target), None)
            out["other_attention"][attention] = {"error": f"{type(exc).__name__}: {exc}"[:300]}
            continue
        for t in b.score_sizes:
            res[f"T{t}_over_decode"] = res[f"T{t}_ms"] / res["T1_ms"]
        res["fast"] = fast_stats(b.target)
        if attention == b.args.attention:
            out.update(res)
        else:
            out["other_attention"][attention] = res
    return out


def sec_eventgpt(b: Bench) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for mode in ("dynamic", "unfused", "fast_graphs"):
        b.mode(b.eventgpt, mode)
        out[mode] = step_ms(b, b.eventgpt, b.request(0), [1] if mode == "dynamic" else [1, 5])
    out["fast"] = fast_stats(b.eventgpt)
    b.mode(b.eventgpt, "dynamic")
    return out


def sec_prefill(b: Bench) -> dict[str, Any]:
    out: dict[str, Any] = {}
    reps = b.args.repeats

    def prefill_times(clip: Callable[[int], str | None], q: int = 0) -> dict[str, float]:
        rows = []
        for r in range(reps + 1):
            state = b.target.prefill(b.request(q, clip=clip(r)))
            rows.append(dict(state.timings))
            b.target.release(state)
            del state
        rows = rows[1:]  # the first is warm-up
        keys = ("preprocess_ms", "vision_ms", "prefill_ms")
        return {k: statistics.median(r.get(k, 0.0) for r in rows) for k in keys}

    for mode in ("dynamic", "fast_graphs"):
        b.mode(b.target, mode)
        out[mode] = prefill_times(lambda r: None)
        out[mode]["prompt_tokens"] = int(b.target.build_prompt_ids(QUESTIONS[0]).numel())
    b.mode(b.target, "fast_graphs", prefix=True)
    out["fast_prefix_miss"] = prefill_times(lambda r: f"miss-{r}")  # a new clip every time
    b.target.prefill(b.request(1, clip="hit"))  # the clip's first question
    out["fast_prefix_hit"] = prefill_times(lambda r: "hit", q=0)  # its second question
    return out


def sec_e2e(b: Bench) -> dict[str, Any]:
    n = b.args.e2e_tokens
    req = b.request(0)
    b.mode(b.target, "dynamic")
    hf = [b.target.hf_generate(req, n)[1] for _ in range(b.args.hf_repeats)]
    dyn = generate(b.target, req, None, max_new_tokens=n)
    b.mode(b.target, "fast_graphs")
    generate(b.target, req, None, max_new_tokens=n)  # warm-up (graph capture)
    runs = [generate(b.target, req, None, max_new_tokens=n) for _ in range(b.args.hf_repeats)]
    fast_ms = statistics.median(r.stats.total_ms for r in runs)
    b.mode(b.target, "fast_graphs", prefix=True)
    generate(b.target, b.request(1, clip="e2e"), None, max_new_tokens=2)  # the clip's first question
    generate(b.target, b.request(2, clip="e2e"), None, max_new_tokens=2)  # warm-up of a hit (its graphs)
    hits = [generate(b.target, b.request(0, clip="e2e"), None, max_new_tokens=n)
            for _ in range(b.args.hf_repeats)]
    hit_ms = statistics.median(r.stats.total_ms for r in hits)
    hf_ms = statistics.median(hf)
    decode = runs[0].stats
    return {
        "new_tokens": decode.new_tokens,
        "hf_new_tokens": n,
        "hf_eager_total_ms": hf_ms,
        "dynamic_total_ms": dyn.stats.total_ms,
        "fast_total_ms": fast_ms,
        "fast_prefix_hit_total_ms": hit_ms,
        "fast_decode_ms_per_token": decode.decode_ms / max(decode.new_tokens - 1, 1),
        "speedup_vs_hf": hf_ms / fast_ms,
        "speedup_vs_hf_prefix_hit": hf_ms / hit_ms,
    }


def sec_overlap(b: Bench) -> dict[str, Any]:
    if b.device.type != "cuda":
        return {"skipped": "needs CUDA streams"}
    b.mode(b.target, "fast_graphs")
    b.mode(b.eventgpt, "fast_graphs")
    req = b.request(0)

    def sequential() -> None:
        s1 = b.target.prefill(req)
        s2 = b.eventgpt.prefill(req)
        b.target.release(s1), b.eventgpt.release(s2)

    def overlapped() -> None:
        streams = [torch.cuda.Stream(b.device), torch.cuda.Stream(b.device)]
        for s in streams:
            s.wait_stream(torch.cuda.current_stream(b.device))
        errors: list[BaseException] = []

        def run(model: Any, stream: torch.cuda.Stream) -> None:
            try:
                with torch.cuda.stream(stream):
                    model.release(model.prefill(req))
            except BaseException as exc:  # re-raised in the main thread
                errors.append(exc)

        threads = [threading.Thread(target=run, args=(m, s))
                   for m, s in ((b.target, streams[0]), (b.eventgpt, streams[1]))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for s in streams:
            torch.cuda.current_stream(b.device).wait_stream(s)
        if errors:
            raise errors[0]

    seq = median_ms(b, sequential, b.args.repeats)
    ovl = median_ms(b, overlapped, b.args.repeats)
    return {"sequential_ms": seq, "overlapped_ms": ovl, "gain": seq / ovl,
            "keep": "overlap" if ovl < seq * 0.97 else "sequential"}


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float().cpu() - b.float().cpu()).abs().max())


def _probe(b: Bench, mode: str) -> dict[str, Any]:
    """Greedy tokens, prefill logits and one decode step's logits of ``mode`` on the
    first request (the step is fed the same token for every mode)."""
    b.mode(b.target, mode)
    t0 = time.perf_counter()
    state = b.target.prefill(b.request(0))
    prefill_logits = state.last_logits.clone()
    step_logits = b.target.score(state, torch.tensor([int(b.ref_token)])).logits[0].clone()
    b.target.release(state)
    first_s = time.perf_counter() - t0  # includes compile + capture of the decode step
    tokens = generate(b.target, b.request(0), None, max_new_tokens=b.args.check_tokens).tokens
    return {"tokens": tokens, "prefill_logits": prefill_logits, "step_logits": step_logits,
            "first_step_s": first_s}


def _time_variant(b: Bench, mode: str) -> dict[str, Any]:
    sizes = [1, b.score_sizes[-1]]
    out: dict[str, Any] = step_ms(b, b.target, b.request(0), sizes)
    out[f"T{sizes[-1]}_over_decode"] = out[f"T{sizes[-1]}_ms"] / out["T1_ms"]
    reps = b.args.repeats
    full = []
    for _ in range(reps + 1):
        state = b.target.prefill(b.request(0))
        full.append(state.timings["prefill_ms"])
        b.target.release(state)
    out["prefill_ms"] = statistics.median(full[1:])
    b.mode(b.target, mode, prefix=True)
    b.target.release(b.target.prefill(b.request(1, clip="variant")))  # the clip's first question
    hits = []
    for _ in range(reps + 1):
        state = b.target.prefill(b.request(0, clip="variant"))
        assert state.timings.get("prefix_hit"), "the variant's second question missed the prefix cache"
        hits.append(state.timings["prefill_ms"])
        b.target.release(state)
    out["prefix_hit_prefill_ms"] = statistics.median(hits[1:])
    out["fast"] = fast_stats(b.target)
    return out


def sec_variants(b: Bench) -> dict[str, Any]:
    """``unfused`` / ``fused`` / ``compiled`` side by side (module docstring).  The
    reference for the checks is ``unfused``, run first."""
    out: dict[str, Any] = {}
    b.mode(b.target, "unfused")
    state = b.target.prefill(b.request(0))
    b.ref_token = int(state.last_logits.argmax())
    b.target.release(state)
    del state
    ref: dict[str, Any] | None = None
    for name in b.args.variants:
        mode = VARIANTS[name]
        try:
            probe = _probe(b, mode)
            if ref is None:
                if name != "unfused":
                    raise RuntimeError("the first variant must be unfused (the reference)")
                ref = probe
            res: dict[str, Any] = {
                "vs_unfused": {
                    **match_rate(ref["tokens"], probe["tokens"]),
                    "prefill_logits_max_diff": _max_diff(ref["prefill_logits"], probe["prefill_logits"]),
                    "step_logits_max_diff": _max_diff(ref["step_logits"], probe["step_logits"]),
                    "same_argmax_after_step": int(ref["step_logits"].argmax()) == int(probe["step_logits"].argmax()),
                },
                "first_step_s": probe["first_step_s"],
            }
            res.update(_time_variant(b, mode))
        except Exception as exc:  # one variant failing keeps the others
            res = {"error": f"{type(exc).__name__}: {exc}",
                   "traceback": traceback.format_exc().splitlines()[-8:]}
            b.modes.pop(id(b.target), None)
            b.target.disable_prefix_cache()
            b.target.disable_fast()
        out[name] = res
    b.mode(b.target, "dynamic")
    return out


RUNNERS: dict[str, Callable[[Bench], dict[str, Any]]] = {
    "correctness": sec_correctness, "hf": sec_hf, "hf_static": sec_hf_static,
    "dynamic": sec_dynamic, "fast_eager": sec_fast_eager, "fast_graphs": sec_fast_graphs,
    "eventgpt": sec_eventgpt, "prefill": sec_prefill, "e2e": sec_e2e, "overlap": sec_overlap,
    "variants": sec_variants,
}


# -- report ----------------------------------------------------------------------------------
