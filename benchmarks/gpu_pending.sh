#!/usr/bin/env bash
# What is still unmeasured on the H200, in calls of at most 10 minutes each (issues 6, 7, 8):
#
#   STAGE=checks  PYTHONPATH=src HF_HUB_OFFLINE=1 bash benchmarks/gpu_pending.sh   # ~8 min
#       the CUDA-only tests (static draft head, pipeline, graphs, step capture), the fast-engine
#       profile of one 7B decode step, and every drafter on world test clips with the fast engine
#       (the heads now replay CUDA graphs: benchmarks/world_bench_gpu.md measured them eager)
#   STAGE=heads7b ...   # ~8 min: the heads at 7B shapes, acceptance-controlled (controlled_7b.sh HEADS=1)
#   STAGE=beyond7b ...  # ~9 min: dynamic γ, trees and batching at 7B shapes, acceptance-controlled
#   STAGE=compile ...   # ~1 min: the variants, compiled in torch.compile's default mode
#   STAGE=engine ...    # ~6 min: head tests, profile incl. the compiled step, every fast-engine
#                       #   section on the compiled variant (--fast-mode compiled)
#   STAGE=gemv ...      # ~6 min: one-row GEMV kernels: tests, a sweep of launch configurations,
#                       #   the Triton layer and compiled@splitkv profiled and timed (SHAPES=qkv,o,...)
#   STAGE=pdl ...       # ~3 min: the same chained with programmatic dependent launch
#   STAGE=triton ...    # ~6 min: CUDA tests, then every goal on --fast-mode triton
#   STAGE=sweep ...     # ~8 min: CUDA tests of the greedy chain and the kernels; benchmarks/step_sweep.py
#                       #   (the decode layer's launch configurations inside chained greedy decoding),
#                       #   then the decode/score steps, EventGPT and end to end on --fast-mode triton
#   STAGE=splitkv ...   # ~5 min: the Triton kernels (split-KV attention, fused GEMVs, the 4-kernel
#                       #   layer): CUDA tests, each alone at 7B shapes, then in the engine: every
#                       #   attention kind on the compiled step, and the variants unfused/compiled/triton
#
# Done in session 4 (2026-11-29): checks, compile, engine, heads7b, beyond7b (reports in
# fast_engine.md, heads_7b.md, beyond_7b.md, world_bench_gpu.md).  Done in session 5: splitkv,
# gemv, pdl, triton, pdl_ab, attn_sweep (fast_engine.md, round 4).  Session 6: triton again
# on the round-5 tree, plus probes run by hand (fast_engine.md, round 5).  Session 7: sweep (with
# SKIP_ENGINE=1), step_sweep.py by hand (round 2 and --rows 9), triton twice (round 6).  Next, in this order:
#   STAGE=checks WORLD_VARIANTS=compiled CAP=150           world + heads on --fast --compile
#                                                          (rehearsed on the CPU: lossless)
#   STAGE=heads7b COMPILE=1 ALPHAS="0.5 0.8"               heads at 7B on the compiled engine
# Knobs: SKIP_WORLD=1 (checks without the world bench), COMPILE=1 (heads7b), WORLD_VARIANTS,
# BUDGET (seconds of the sweep, 300) and SKIP_ENGINE=1 (the sweep stage without the engine sections).
#
# Each stage writes into $OUT (at most 8 files: the device returns no more).  On a CPU,
# TINY=1 runs every stage at tiny size to prove the script (the figures mean nothing there).
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="${PYTHONPATH:-src}" HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
OUT=${OUT:-out/gpu_pending}
STAGE=${STAGE:?set STAGE to checks, heads7b, beyond7b, compile, engine, splitkv, gemv, pdl, triton, pdl_ab, attn_sweep or sweep}
TINY=${TINY:-0}
mkdir -p "$OUT"
LOG="$OUT/log.txt"
log() { echo "[$(date +%H:%M:%S) +${SECONDS}s] $*" | tee -a "$LOG"; }
{ nvidia-smi -L 2>/dev/null || true; git rev-parse HEAD 2>/dev/null || true; } >>"$LOG"
if [[ $TINY == 1 ]]; then
  PRESET=tiny-random; DEVICE=cpu; WORLD_TEST=4; CAP=40; ALPHAS=0.7; REQ=1; TOK=8
else
  PRESET=7b; DEVICE=cuda; WORLD_TEST=${WORLD_TEST:-60}; CAP=${CAP:-200}; ALPHAS=${ALPHAS:-"0.5 0.7 0.9"}; REQ=3; TOK=64
fi

run_tests() {  # pytest ARGS... into tests.txt; its summary into the log
  python3 -m pytest -p no:warnings "$@" >"$OUT/tests.txt" 2>&1 || log "some tests failed (tests.txt)"
  tail -n 2 "$OUT/tests.txt" | tee -a "$LOG"
}
fast_engine() {  # NAME ARGS...: benchmarks/fast_engine.py into NAME.json / NAME.txt (tiny on a CPU with TINY=1)
  local name=$1; shift
  local args=("$@")
  [[ $TINY == 1 ]] && args+=(--preset tiny-random --device cpu --dtype float32 --repeats 2 --hf-repeats 1 --e2e-tokens 8)
  python3 benchmarks/fast_engine.py "${args[@]}" --json "$OUT/$name.json" >"$OUT/$name.txt" 2>&1 \
    || log "fast_engine failed ($name.txt)"
}

case $STAGE in
checks)
  log "CUDA-only tests"
  run_tests tests/adapters/test_head_static.py tests/decoding/test_pipeline.py \
    tests/models/test_fast_graphs.py tests/bench/test_bench_step_prepare.py -k "cuda or graph"
  log "profile of one decode step ($PRESET)"
  python3 benchmarks/fast_profile.py --preset "$PRESET" --device "$DEVICE" --json "$OUT/fast_profile.json" \
    >"$OUT/fast_profile.txt" 2>&1 || log "fast_profile failed (fast_profile.txt)"
  [[ ${SKIP_WORLD:-0} == 1 ]] && { log "stage checks done (world bench skipped) in ${SECONDS}s"; exit 0; }
  log "world test clips ($WORLD_TEST of the 16 000-clip world) with the shipped models, ${WORLD_VARIANTS:-fast}"
  python3 -m evspec.adapters.world_subset --out /tmp/gpu_pending_world --clips 16000 --seed 0 \
    --train 0 --val 0 --test "$WORLD_TEST" >>"$LOG" 2>&1
  MANIFEST=/tmp/gpu_pending_world/manifest.json VARIANTS=${WORLD_VARIANTS:-fast} CAP_S=$CAP DEVICE=$DEVICE OUT=$OUT/bench \
    bash benchmarks/world_bench_gpu.sh >>"$LOG" 2>&1 || log "world bench failed"
  (cd "$OUT" && tar czf bench.tar.gz bench && rm -rf bench)
  ;;
heads7b)
  log "heads at 7B shapes, acceptance-controlled (alphas $ALPHAS)"
  TARGET=$PRESET DEVICE=$DEVICE HEADS=1 COMPILE=${COMPILE:-0} ALPHAS="$ALPHAS" GAMMAS=2,4,6 TOKENS=$TOK REQUESTS=$REQ \
    bash benchmarks/controlled_7b.sh "$OUT/runs" >>"$LOG" 2>&1 || log "controlled_7b failed"
  for d in "$OUT"/runs/alpha-*; do cp "$d/report.md" "$OUT/report_$(basename "$d").md" 2>/dev/null || true; done
  (cd "$OUT" && tar czf runs.tar.gz runs && rm -rf runs)
  ;;
beyond7b)
  log "beyond at 7B shapes, acceptance-controlled"
  SETTING=7b; [[ $TINY == 1 ]] && SETTING=tiny
  python3 benchmarks/beyond.py --setting "$SETTING" --device "$DEVICE" --requests "$((REQ * 2))" \
    --max-new-tokens "$TOK" --alpha 0.2,0.5,0.8 --features gamma,tree,batch --out "$OUT" >>"$LOG" 2>&1 \
    || log "beyond failed"
  ;;
compile)
  log "compiled variant, compile mode default"
  fast_engine fast_engine_compile_default --sections variants --variants unfused,fused,compiled --compile-mode default
  ;;
engine)
  log "CUDA tests of the graphed draft head"
  run_tests tests/adapters/test_head_static.py
  log "profile of one decode step, fused and compiled ($PRESET)"
  python3 benchmarks/fast_profile.py --preset "$PRESET" --device "$DEVICE" --compiled --steps 10 \
    --json "$OUT/fast_profile_compiled.json" >"$OUT/fast_profile_compiled.txt" 2>&1 || log "fast_profile failed"
  log "every fast-engine section with the compiled variant (compile mode default)"
  fast_engine fast_engine_compiled --fast-mode compiled --skip hf_static,variants
  ;;
splitkv)
  log "split-KV decode attention: CUDA tests, the kernels alone, then inside the compiled engine"
  run_tests tests/models/test_decode_attention.py tests/models/test_fast_llama.py \
    tests/models/test_gemv.py tests/models/test_triton_layer.py -k "triton or splitkv or torch_layer"
  PROBE=(); [[ $TINY == 1 ]] && PROBE=(--device cpu --layers 2 --rows 128 --position 100 --heads 4 --dim 16 --repeats 2)
  python3 benchmarks/attention_probe.py "${PROBE[@]}" --json "$OUT/attention_probe.json" \
    >"$OUT/attention_probe.txt" 2>&1 || log "attention_probe failed"
  log "the 7B GEMVs alone: cuBLAS against the fused Triton kernel (norm prologue / residual epilogue)"
  GEMV=(); [[ $TINY == 1 ]] && GEMV=(--device cpu --tiny --layers 2 --repeats 2)
  python3 benchmarks/gemv_probe.py "${GEMV[@]}" --json "$OUT/gemv_probe.json" >"$OUT/gemv_probe.txt" 2>&1 \
    || log "gemv_probe failed"
  # fast_graphs times every attention kind, splitkv included
  fast_engine fast_engine_splitkv --fast-mode compiled --sections fast_graphs,eventgpt,variants --attention auto \
    --variants unfused,compiled,triton
  ;;
gemv)
  log "decode GEMVs (one token row, no tl.dot): CUDA tests, every launch configuration, the Triton layer profiled"
  run_tests tests/models/test_gemv.py tests/models/test_triton_layer.py tests/models/test_decode_attention.py
  GEMV=(--shapes "${SHAPES:-qkv,o,gate_up,down}")
  [[ $TINY == 1 ]] && GEMV=(--device cpu --tiny --layers 2 --repeats 2 --shapes qkv)
  python3 benchmarks/gemv_probe.py "${GEMV[@]}" --sweep --rows 1 \
    --json "$OUT/gemv_sweep.json" >"$OUT/gemv_sweep.txt" 2>&1 || log "gemv_probe failed"
  log "profile: compiled@splitkv and the Triton layer ($PRESET)"
  PROF=(--compiled --triton); [[ $TINY == 1 ]] && PROF=(--compiled)
  python3 benchmarks/fast_profile.py --preset "$PRESET" --device "$DEVICE" "${PROF[@]}" --only-new \
    --attention splitkv --steps 10 --json "$OUT/fast_profile.json" >"$OUT/fast_profile.txt" 2>&1 \
    || log "fast_profile failed"
  fast_engine fast_engine_gemv --fast-mode compiled --sections variants --variants unfused,compiled_splitkv,triton
  ;;
pdl)
  log "the Triton step chained with programmatic dependent launch: CUDA tests (graphs), GEMV sweep, profile, engine"
  run_tests tests/models/test_gemv.py tests/models/test_triton_layer.py tests/models/test_decode_attention.py \
    tests/models/test_fast_graphs.py
  GEMV=(--shapes "${SHAPES:-qkv,o,gate_up,down}")
  [[ $TINY == 1 ]] && GEMV=(--device cpu --tiny --layers 2 --repeats 2 --shapes qkv)
  python3 benchmarks/gemv_probe.py "${GEMV[@]}" --sweep --no-pdl --rows 1 \
    --json "$OUT/gemv_sweep.json" >"$OUT/gemv_sweep.txt" 2>&1 || log "gemv_probe failed"
  if [[ $TINY != 1 ]]; then
    log "profile: the Triton layer ($PRESET)"
    python3 benchmarks/fast_profile.py --preset "$PRESET" --device "$DEVICE" --triton --only-new \
      --attention splitkv --steps 10 --json "$OUT/fast_profile.json" >"$OUT/fast_profile.txt" 2>&1 \
      || log "fast_profile failed"
  fi
  fast_engine fast_engine_pdl --fast-mode triton --sections fast_graphs,eventgpt --attention splitkv
  ;;
triton)
  log "every goal of issue 6 on --fast-mode triton (Triton decode layer + PDL, compiled score/prefill, auto attention)"
  run_tests tests/models/test_gemv.py tests/models/test_triton_layer.py tests/models/test_decode_attention.py \
    tests/models/test_fast_graphs.py tests/models/test_fast_ops.py tests/models/test_fast_llama.py
  fast_engine fast_engine_triton --fast-mode triton --skip hf_static,variants,dynamic,fast_eager,overlap
  ;;
pdl_ab)
  log "programmatic dependent launch off (EVSPEC_PDL=0) against on, steps of both 7B models; the Triton step profiled"
  EVSPEC_PDL=0 fast_engine fast_engine_nopdl --fast-mode triton --sections fast_graphs,eventgpt
  fast_engine fast_engine_pdl --fast-mode triton --sections fast_graphs,eventgpt
  if [[ $TINY != 1 ]]; then
    python3 benchmarks/fast_profile.py --preset "$PRESET" --device "$DEVICE" --triton --only-new --steps 10 \
      --json "$OUT/fast_profile.json" >"$OUT/fast_profile.txt" 2>&1 || log "fast_profile failed"
  fi
  ;;
attn_sweep)
  log "split-KV launch configurations (blocks wanted x keys per iteration x warps x stages), 7B shapes"
  PROBE=(); [[ $TINY == 1 ]] && PROBE=(--device cpu --layers 1 --rows 128 --position 100 --heads 2 --dim 16 --repeats 1)
  python3 benchmarks/attention_probe.py "${PROBE[@]}" --splitkv-sweep --kinds sdpa,splitkv \
    --json "$OUT/attention_sweep.json" >"$OUT/attention_sweep.txt" 2>&1 || log "attention_probe failed"
  ;;
sweep)
  log "the Triton decode layer's launch configurations timed inside chained greedy decoding; then the steps"
  run_tests tests/models/test_greedy_chain.py tests/models/test_gemv.py tests/models/test_triton_layer.py \
    tests/models/test_fast_graphs.py
  SWEEP=(--budget-s "${BUDGET:-300}"); [[ $TINY == 1 ]] && SWEEP=(--preset tiny-random --device cpu --kernels torch \
    --steps 3 --repeats 1 --check 3 --ab 1 --only vec,o)
  python3 benchmarks/step_sweep.py "${SWEEP[@]}" --json "$OUT/step_sweep.json" >"$OUT/step_sweep.txt" 2>&1 \
    || log "step_sweep failed"
  tail -n 3 "$OUT/step_sweep.txt" | tee -a "$LOG"
  [[ ${SKIP_ENGINE:-0} == 1 ]] || fast_engine fast_engine_chain --fast-mode triton --sections fast_graphs,eventgpt,e2e --gammas 8
  ;;
*) log "unknown STAGE=$STAGE"; exit 2 ;;
esac
log "stage $STAGE done in ${SECONDS}s: $(ls "$OUT" | tr '\n' ' ')"
