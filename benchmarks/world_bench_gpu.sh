#!/usr/bin/env bash
# Every drafter on the world's held-out clips on one GPU: `evspec bench` with the
# plain engine, then with the fast engine (static cache, CUDA graphs, prefix cache), each
# under a wall-time cap; partial runs keep every finished measurement (requests are measured
# one at a time across all drafters, so a cap shortens the request list, not the drafter list).
#
#   PYTHONPATH=src HF_HUB_OFFLINE=1 OUT=DIR bash benchmarks/world_bench_gpu.sh
#
# Inputs (environment; defaults in brackets):
#   ASSETS      a folder holding world/ (target, drafter, heads, manifest.json)
#               [src/evspec/assets]; trained drafters load from ASSETS/world/heads
#   MANIFEST    the requests [ASSETS/world/manifest.json; a world's manifest.json works too]
#   SPLIT       [test]   LIMIT [0 = all]   GAMMAS [2,4,6]   MAX_NEW [48]
#   DRAFTERS    [none,eventgpt,prompt-lookup,eventgpt-adapter,eventgpt-lora,event-head,target-head]
#   DEVICE, DTYPE  [cuda, float32: the exact lossless check]
#   VARIANTS    [plain fast]   (also: compiled = --fast --compile)   CAP_S seconds per variant [150]
# Writes OUT/<variant>.tar.gz (the run folder: records.jsonl, run.json, summary.json, report.md,
# plots; PACK=0 leaves the folder instead), OUT/<variant>_report.md, OUT/<variant>.log and
# OUT/log.txt: 7 files, within what the device runner returns.
if [[ ${1:-} == -h || ${1:-} == --help ]]; then sed -n '2,/^[^#]/s/^# \{0,1\}//p' "$0"; exit 0; fi
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="${PYTHONPATH:-src}" HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false

OUT=${OUT:-out/world_bench_gpu}
ASSETS=${ASSETS:-src/evspec/assets}
WORLD=$ASSETS/world
MANIFEST=${MANIFEST:-$WORLD/manifest.json}
SPLIT=${SPLIT:-test}
LIMIT=${LIMIT:-0}
GAMMAS=${GAMMAS:-2,4,6}
MAX_NEW=${MAX_NEW:-48}
DRAFTERS=${DRAFTERS:-none,eventgpt,prompt-lookup,eventgpt-adapter,eventgpt-lora,event-head,target-head}
DEVICE=${DEVICE:-cuda}
DTYPE=${DTYPE:-float32}
VARIANTS=${VARIANTS:-"plain fast"}
CAP_S=${CAP_S:-150}
PY=${PY:-python3}

for need in "$WORLD/target/config.json" "$WORLD/drafter/config.json" "$MANIFEST"; do
  [[ -f $need ]] || { echo "world_bench_gpu: $need not found (set ASSETS or MANIFEST)" >&2; exit 2; }
done
mkdir -p "$OUT"
LOG="$OUT/log.txt"
log() { echo "[$(date +%H:%M:%S) +${SECONDS}s] $*" | tee -a "$LOG"; }
log "world_bench_gpu: assets=$ASSETS manifest=$MANIFEST split=$SPLIT limit=$LIMIT gammas=$GAMMAS variants=$VARIANTS cap=${CAP_S}s"
{ nvidia-smi -L 2>/dev/null || true; git rev-parse HEAD 2>/dev/null || true; } >>"$LOG" 2>&1

ARGS=(--dataset "$MANIFEST" --split "$SPLIT" --target "$WORLD/target" --draft-model "$WORLD/drafter"
      --drafters "$DRAFTERS" --gamma "$GAMMAS" --max-new-tokens "$MAX_NEW" --device "$DEVICE" --dtype "$DTYPE")
(( LIMIT > 0 )) && ARGS+=(--limit "$LIMIT")
for variant in $VARIANTS; do
  case $variant in
    plain) EXTRA=() ;;
    fast) EXTRA=(--fast --prefix-cache) ;;
    compiled) EXTRA=(--fast --compile --prefix-cache) ;;
    *) log "unknown variant $variant (plain, fast, compiled)"; exit 2 ;;
  esac
  log "variant $variant: evspec bench ${EXTRA[*]:-} (at most ${CAP_S}s)"
  rc=0
  EVSPEC_ASSETS="$ASSETS" timeout --signal=INT "$CAP_S" $PY -m evspec bench "${ARGS[@]}" "${EXTRA[@]}" \
    --out "$OUT/$variant" >"$OUT/$variant.log" 2>&1 || rc=$?
  grep -h "measurements written" "$OUT/$variant.log" | tee -a "$LOG" || true
  (( rc == 0 )) || log "variant $variant stopped with exit $rc (a cap stop is 124 or 130; the records so far are kept)"
  if [[ ! -f $OUT/$variant/report.md && -f $OUT/$variant/records.jsonl ]]; then
    EVSPEC_ASSETS="$ASSETS" $PY -m evspec report "$OUT/$variant" >>"$LOG" 2>&1 || log "report for $variant failed"
  fi
  if [[ ${PACK:-1} == 1 && -d $OUT/$variant ]]; then  # the device runner returns at most 8 files
    cp "$OUT/$variant/report.md" "$OUT/${variant}_report.md" 2>/dev/null || true
    tar czf "$OUT/$variant.tar.gz" -C "$OUT" "$variant" && rm -rf "${OUT:?}/$variant"
  fi
done
log "done in ${SECONDS}s"
