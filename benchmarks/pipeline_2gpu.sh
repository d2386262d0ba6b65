#!/usr/bin/env bash
# Sequential SD on one GPU vs the pipelined schedule (drafter on a second GPU, or
# on a second stream of the same GPU), beside target-only, acceptance-controlled α sweep.
# Loads the models once (target + EventGPT on cuda:0, a second EventGPT on cuda:1) and runs,
# per α: sequential (cuda:0), pipelined-2gpu (draft on cuda:1), pipelined-1gpu (cuda:0).
# Each run folder holds records.jsonl + report.md (target-only is measured in each);
# OUTDIR/summary.md compares the schedules per α and γ (time, speedup, TTFT, α, τ).
#
#   bash benchmarks/pipeline_2gpu.sh OUTDIR            # 2 GPUs: 7b, bf16, --fast
#   TINY=1 bash benchmarks/pipeline_2gpu.sh OUTDIR     # CPU, tiny-random models (seconds)
#
# Knobs (env): ALPHAS ("0.1 0.3 0.5 0.7 0.9"), GAMMAS (1,2,4,8), REQUESTS (3), TOKENS (64),
# BUDGET_S (480: no new run starts after this many seconds; rerunning resumes).
if [[ ${1:-} == -h || ${1:-} == --help ]]; then sed -n '2,/^[^#]/s/^# \{0,1\}//p' "$0"; exit 0; fi
set -euo pipefail
out=${1:-runs/pipeline_2gpu}
export PYTHONPATH=src HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
export OUT="$out" TINY=${TINY:-0} ALPHAS=${ALPHAS:-"0.1 0.3 0.5 0.7 0.9"} GAMMAS=${GAMMAS:-1,2,4,8}
export REQUESTS=${REQUESTS:-3} TOKENS=${TOKENS:-64} BUDGET_S=${BUDGET_S:-480}
python3 - <<'PY'
import os
import statistics as st
import sys
import time
from pathlib import Path

from evspec.bench.backend import EngineBackend
from evspec.bench.config import BenchConfig
from evspec.bench.records import read_records
from evspec.bench.run import bench, load_backend
from evspec.loading import ModelSpec, load_models

t_begin = time.perf_counter()
out, tiny = Path(os.environ["OUT"]), os.environ["TINY"] == "1"
alphas = [float(a) for a in os.environ["ALPHAS"].split()]
gammas = tuple(int(g) for g in os.environ["GAMMAS"].split(","))
requests, tokens, budget = int(os.environ["REQUESTS"]), int(os.environ["TOKENS"]), float(os.environ["BUDGET_S"])
preset, dtype = ("tiny-random", "float32") if tiny else ("7b", "bfloat16")
dev0, dev1 = ("cpu", "cpu") if tiny else ("cuda:0", "cuda:1")

# -- models, once: target + draft on dev0 (sequential, pipelined-1gpu), a draft on dev1
spec = ModelSpec(target=preset, dtype=dtype, device=dev0, fast=not tiny, seed=0)
base = load_backend(spec, ("none", "eventgpt"))
draft1 = load_models(ModelSpec(target=None, draft_model=preset, device=dev1, dtype=dtype, seed=0,
                               fast=not tiny)).draft
print(f"models loaded in {time.perf_counter() - t_begin:.0f} s", flush=True)


def backend(name: str) -> EngineBackend:
    draft, draft_dev, schedule = {
        "sequential": (base.draft_model, dev0, "sequential"),
        "pipelined-2gpu": (draft1, dev1, "pipelined"),
        "pipelined-1gpu": (base.draft_model, dev0, "pipelined"),
    }[name]
    info = {**base.info, "placement": {"target": dev0, "draft": draft_dev}, "variant": name}
    return EngineBackend(base.target, draft, info=info, schedule=schedule)


if not tiny:  # capture the cuda:1 drafter's CUDA graphs single-threaded before pipelining
    warm = EngineBackend(base.target, draft1, info={**base.info, "variant": "warm-up"})
    bench(BenchConfig(drafters=("none", "eventgpt"), gammas=gammas, max_new_tokens=tokens, warmup=1,
                      hf_baseline=False, controlled_alpha=0.5, dataset=f"random:{requests}"),
          out / "_warmup-draft-cuda1", spec, backend=warm, split=None, limit=1, report=False, progress=False)
    print(f"cuda:1 drafter warmed up at {time.perf_counter() - t_begin:.0f} s", flush=True)

variants = ("sequential", "pipelined-2gpu", "pipelined-1gpu")
done: list[tuple[float, str, Path]] = []
for i, alpha in enumerate(alphas):
    for name in variants:
        if time.perf_counter() - t_begin > budget:
            print(f"budget of {budget:.0f} s reached: skipping {name} α={alpha} (rerun to resume)", flush=True)
            continue
        b = backend(name)
        config = BenchConfig(drafters=("none", "eventgpt"), gammas=gammas, max_new_tokens=tokens,
                             warmup=1 if i == 0 else 0, hf_baseline=False, controlled_alpha=alpha,
                             dataset=f"random:{requests}", schedule=b.schedule)
        run_dir = out / name / f"alpha-{alpha:g}"
        t0 = time.perf_counter()
        res = bench(config, run_dir, spec, backend=b, split=None, progress=False,
                    argv=["benchmarks/pipeline_2gpu.sh", name, f"alpha={alpha:g}"])
        print(f"{name:15s} α={alpha:g}: {res.written} written ({res.failed} failed) in "
              f"{time.perf_counter() - t0:.0f} s", flush=True)
        done.append((alpha, name, run_dir))

# -- summary: per α and γ, mean over requests (ms), speedup vs that run's target-only
rows = ["| α | γ | variant | total ms | speedup vs target-only | TTFT ms | target-only TTFT ms | "
        "α measured | τ | pre-draft ms (hidden) | lossless |", "|" + "---|" * 11]
for alpha, name, run_dir in done:
    recs = [r for r in read_records(run_dir) if r.get("status") == "ok"]
    base_recs = {r["request_id"]: r for r in recs if r["drafter"] == "none"}
    for g in gammas:
        sd = [r for r in recs if r["drafter"] == "eventgpt" and r["gamma"] == g and r["request_id"] in base_recs]
        if not sd:
            continue
        tot = sum(r["timings"]["total_ms"] for r in sd)
        ref = sum(base_recs[r["request_id"]]["timings"]["total_ms"] for r in sd)
        mean = lambda xs: st.fmean(xs) if xs else float("nan")  # noqa: E731
        rows.append(
            f"| {alpha:g} | {g} | {name} | {tot / len(sd):.1f} | {ref / tot:.2f}× | "
            f"{mean([r['timings']['ttft_ms'] for r in sd]):.1f} | "
            f"{mean([base_recs[r['request_id']]['timings']['ttft_ms'] for r in sd]):.1f} | "
            f"{mean([r['alpha'] for r in sd]):.2f} | {mean([r['tau'] for r in sd]):.2f} | "
            f"{mean([r['timings'].get('predraft_ms', 0.0) for r in sd]):.1f} | "
            f"{sum(bool(r.get('matches_target')) for r in sd)}/{len(sd)} |"
        )
text = "\n".join([
    f"# Pipelined vs sequential ({'tiny-random, CPU' if tiny else '7b, bf16, --fast'}; acceptance-controlled)",
    "",
    f"{requests} random requests × {tokens} tokens; target on {dev0}; drafter: EventGPT on {dev0} "
    f"(sequential, pipelined-1gpu: a second CUDA stream) or {dev1} (pipelined-2gpu). Speedup = "
    "target-only total / SD total over the same requests (ratio of sums). Timings are real, "
    "acceptance is set (α measured can fall below the set α in bf16; see docs/bench.md).",
    "", *rows, "",
])
(out / "summary.md").write_text(text, encoding="utf-8")
print(text)
print(f"total {time.perf_counter() - t_begin:.0f} s; reports: {out}/*/alpha-*/report.md", flush=True)
PY
