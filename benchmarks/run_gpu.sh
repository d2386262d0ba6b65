#!/usr/bin/env bash
# The GPU runner: each stage re-measures headline rows with the order-free harness and
# writes everything it made into OUT (default out/STAGE), including the CUDA test log.
set -euo pipefail

usage() {
  cat <<'EOF'
usage: bash benchmarks/run_gpu.sh STAGE [--tiny] [--out DIR]

Stages (minutes on one H200; each under 9):
  tests         CUDA-only tests (graphs, static heads, pipeline, step capture) -> tests.txt     ~3
  world         the world's held-out clips, every drafter and the HF baselines (eager,
                static), fast engine + prefix cache, fp32, γ 2,4,6, cache warm               ~8
  world-cold    the same with --cache cold (every run pays the clip's cold start)             ~8
  world-plain   the same on the default engine, cache warm                                    ~8
  heads7b       7B shapes (random weights, bf16, fast engine): EventGPT-7B and both heads
                with the world's recorded acceptance (--replay), HF eager + static beside
                evspec target-only, 128 new tokens, cache warm                               ~7
  heads7b-cold  the same with --cache cold                                                   ~7
  controlled7b  the same drafters at i.i.d. α 0.5 and 0.8 (acceptance-controlled sweep)      ~8
  beyond7b      benchmarks/beyond.py at 7B shapes: fixed and dynamic γ interleaved per
                request with target-only, and the cascade (acceptance-controlled)            ~6
  engine        benchmarks/fast_engine.py: decode/prefill/end-to-end of the fast engine
                against HF eager and HF static + compile                                     ~8

Options:
  --tiny      run the stage at tiny size on the CPU (tiny-random presets, 2 requests, 8
              tokens): proves the commands; the figures mean nothing
  --out DIR   where the stage writes (default out/STAGE)

Environment: WORLD_TEST (held-out world clips, default 40), REQUESTS (7B requests, 6),
TOKENS (7B answer length, 128), CAP_S (seconds per bench run before it stops cleanly
and keeps what it measured, 420), HF (the transformers baselines, eager,static).  Then, for a bench stage:
  python3 -m evspec report OUT/run           # report.md + summary.json
  copy OUT/run/summary.json to benchmarks/results/<topic>/ and list it in
  benchmarks/headlines.json; python3 -m evspec report --results benchmarks/
EOF
}

STAGE=""; TINY=0; OUT=""
while (( $# )); do
  case $1 in
    -h|--help) usage; exit 0 ;;
    --tiny) TINY=1 ;;
    --out) OUT=$2; shift ;;
    -*) echo "run_gpu.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
    *) STAGE=$1 ;;
  esac
  shift
done
[[ -n $STAGE ]] || { usage >&2; exit 2; }
cd "$(dirname "$0")/.."
export PYTHONPATH="${PYTHONPATH:-src}" HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
OUT=${OUT:-out/$STAGE}
mkdir -p "$OUT"
LOG="$OUT/log.txt"
log() { echo "[$(date +%H:%M:%S) +${SECONDS}s] $*" | tee -a "$LOG"; }
{ nvidia-smi -L 2>/dev/null || echo "no GPU"; git rev-parse HEAD 2>/dev/null || true
  git status --porcelain --untracked-files=no 2>/dev/null | sed -n 1,20p || true; } >>"$LOG"

WORLD=src/evspec/assets/world
TRACE=benchmarks/results/world/acceptance_traces.json
CAP_S=${CAP_S:-420}
if [[ $TINY == 1 ]]; then
  DEVICE=cpu; PRESET=tiny-random; REQUESTS=2; TOKENS=8; LIMIT=(--limit 2); FAST=(); CAP_S=${CAP_S:-480}
  MANIFEST=$WORLD/manifest.json; SPLIT=test
else
  DEVICE=cuda; PRESET=7b; REQUESTS=${REQUESTS:-6}; TOKENS=${TOKENS:-128}; LIMIT=(); FAST=(--fast)
  MANIFEST=/tmp/run_gpu_world/manifest.json; SPLIT=test
fi

bench() {  # NAME ARGS...: one `evspec bench` into OUT/NAME, stopped cleanly after CAP_S seconds
  local name=$1; shift
  log "evspec bench $* (at most ${CAP_S}s)"
  local rc=0
  timeout --signal=INT "$CAP_S" python3 -m evspec bench "$@" --out "$OUT/$name" --no-report \
    >"$OUT/$name.log" 2>&1 || rc=$?
  grep -h "measurements written" "$OUT/$name.log" | tee -a "$LOG" || true
  (( rc == 0 )) || log "$name stopped with exit $rc (124/130: the cap; every finished request is kept)"
  python3 -m evspec report "$OUT/$name" --no-plots >>"$LOG" 2>&1 || log "report of $name failed"
}

world_clips() {  # the held-out clips of the world the models were trained on
  [[ $TINY == 1 || -f $MANIFEST ]] && return 0
  log "generating ${WORLD_TEST:-40} held-out world clips"
  python3 -m evspec.training.heads.world_subset --out /tmp/run_gpu_world --clips 16000 --seed 0 \
    --train 0 --val 0 --test "${WORLD_TEST:-40}" >>"$LOG" 2>&1
}

world() {  # CACHE ENGINE...
  local cache=$1; shift
  world_clips
  bench run --dataset "$MANIFEST" --split "$SPLIT" "${LIMIT[@]}" --target "$WORLD/target" \
    --draft-model "$WORLD/drafter" --device "$DEVICE" --dtype float32 \
    --drafters none,eventgpt,prompt-lookup,eventgpt-adapter,eventgpt-lora,event-head,target-head \
    --gamma 2,4,6 --max-new-tokens 48 --hf-baselines "${HF:-eager,static}" --cache "$cache" "$@"
}

heads7b() {  # CACHE MODE...
  local cache=$1; shift
  bench run --dataset "random:$REQUESTS" --target "$PRESET" --device "$DEVICE" "${FAST[@]}" \
    --drafters none,eventgpt,event-head,target-head --gamma 2,4,6 --max-new-tokens "$TOKENS" \
    --drafter-path event-head=untrained --drafter-path target-head=untrained \
    --hf-baselines "${HF:-eager,static}" --cache "$cache" "$@"
}

case $STAGE in
  tests)
    log "CUDA-only tests"
    python3 -m pytest -p no:warnings -q tests/training/heads/test_head_static.py \
      tests/decoding/test_pipeline.py \
      tests/models/test_fast_graphs.py tests/bench/test_bench_step_prepare.py tests/models/test_gemv.py \
      tests/models/test_triton_layer.py tests/models/test_decode_attention.py >"$OUT/tests.txt" 2>&1 \
      || log "some tests failed (tests.txt)"
    tail -n 3 "$OUT/tests.txt" | tee -a "$LOG" ;;
  world) world warm "${FAST[@]}" --prefix-cache ;;
  world-cold) world cold "${FAST[@]}" --prefix-cache ;;
  world-plain) world warm ;;
  heads7b) heads7b warm --replay "$TRACE" ;;
  heads7b-cold) heads7b cold --replay "$TRACE" ;;
  controlled7b)
    for a in 0.5 0.8; do
      CAP_S=$(( CAP_S / 2 )) bench "alpha-$a" --dataset "random:$REQUESTS" --target "$PRESET" --device "$DEVICE" \
        "${FAST[@]}" --drafters none,eventgpt,event-head,target-head --gamma 2,4,6 --max-new-tokens "$TOKENS" \
        --drafter-path event-head=untrained --drafter-path target-head=untrained --controlled-alpha "$a" \
        --no-hf-baseline
    done ;;
  beyond7b)
    SETTING=(--setting 7b --device cuda --requests 6 --max-new-tokens 64)
    [[ $TINY == 1 ]] && SETTING=(--setting tiny --device cpu --requests 2 --max-new-tokens 8)
    log "beyond.py ${SETTING[*]} --features gamma,cascade"
    timeout --signal=INT "$CAP_S" python3 benchmarks/beyond.py "${SETTING[@]}" --alpha 0.2,0.5,0.8 \
      --features gamma,cascade --out "$OUT/beyond" >"$OUT/beyond.log" 2>&1 || log "beyond failed (beyond.log)" ;;
  engine)
    ARGS=(); [[ $TINY == 1 ]] && ARGS=(--preset tiny-random --device cpu --dtype float32 --repeats 2 \
      --hf-repeats 1 --e2e-tokens 8)
    log "fast_engine.py ${ARGS[*]:-}"
    python3 benchmarks/fast_engine.py "${ARGS[@]}" --json "$OUT/fast_engine.json" >"$OUT/fast_engine.txt" 2>&1 \
      || log "fast_engine failed (fast_engine.txt)" ;;
  *) echo "run_gpu.sh: unknown stage $STAGE" >&2; usage >&2; exit 2 ;;
esac
log "stage $STAGE done in ${SECONDS}s"
