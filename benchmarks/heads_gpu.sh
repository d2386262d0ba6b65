#!/usr/bin/env bash
# The draft heads on one GPU in one run (≤ 10 min on one H200): collect -> train every module ->
# evaluate in the engine on held-out world clips -> table + JSON + the heads to ship.
#
#   PYTHONPATH=src HF_HUB_OFFLINE=1 bash benchmarks/heads_gpu.sh        # writes into $OUT
#
# Inputs (environment; defaults in brackets):
#   TARGET, DRAFT   world checkpoints [src/evspec/assets/world/{target,drafter}]
#   WORLD           a world folder with manifest.json; when empty, the first clips of each
#                   split of the world the checkpoints were trained on are written
#                   (WORLD_CLIPS / WORLD_SEED, read from the assets README when empty)
#   N_TRAIN_CLIPS, N_VAL_CLIPS, N_TEST_CLIPS   clips per split of that subset [1200 30 60]
#   SEEDS           seeds of event-head and target-head ["0 1 2"]
#   *_BUDGET        seconds per phase: COLLECT [100] TRAIN [110] EVAL [150]
#   DEVICE, DTYPE   [cuda, float32: exact lossless check; the world models are small]
#   OUT             output folder [$OUT from the device runner, else out/heads_gpu]
# Outputs in $OUT (5 files): heads_table.md, heads.json, heads_assets.tar.gz (unpack into
# src/evspec/assets/world/heads), runs.tar.gz (histories, loss plots, logs, engine
# records), log.txt.  CPU rehearsal at micro scale: see docs/heads.md.
if [[ ${1:-} == -h || ${1:-} == --help ]]; then sed -n '2,/^[^#]/s/^# \{0,1\}//p' "$0"; exit 0; fi
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="${PYTHONPATH:-src}" HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
# many small processes share the cores: one intra-op thread each (the GPU does the math)
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} MKL_NUM_THREADS=${MKL_NUM_THREADS:-1}

OUT=${OUT:-out/heads_gpu}
WORK=${WORK:-$(mktemp -d /tmp/evspec_heads.XXXXXX)}
ASSETS=src/evspec/assets/world
TARGET=${TARGET:-$ASSETS/target}
DRAFT=${DRAFT:-$ASSETS/drafter}
WORLD=${WORLD:-}
WORLD_CLIPS=${WORLD_CLIPS:-}
WORLD_SEED=${WORLD_SEED:-}
WORLD_RESOLUTION=${WORLD_RESOLUTION:-}
N_TRAIN_CLIPS=${N_TRAIN_CLIPS:-1200}
N_VAL_CLIPS=${N_VAL_CLIPS:-30}
N_TEST_CLIPS=${N_TEST_CLIPS:-60}
DEVICE=${DEVICE:-cuda}
DTYPE=${DTYPE:-float32}
CANVAS=${CANVAS:-sensor}
MAX_NEW=${MAX_NEW:-48}
COLLECT_SHARDS=${COLLECT_SHARDS:-6}
COLLECT_BUDGET=${COLLECT_BUDGET:-100}
TEST_QUESTIONS=${TEST_QUESTIONS:-300}
TRAIN_BUDGET=${TRAIN_BUDGET:-110}
HEAD_STEPS=${HEAD_STEPS:-4000}
ADAPTER_STEPS=${ADAPTER_STEPS:-3000}
LORA_STEPS=${LORA_STEPS:-1500}
BATCH=${BATCH:-64}
LORA_BATCH=${LORA_BATCH:-16}
LORA_LR=${LORA_LR:-1e-3}
SEEDS=${SEEDS:-"0 1 2"}
PREFILL_HEAD=${PREFILL_HEAD:-1}
GAMMAS=${GAMMAS:-2,4,6}
REPORT_GAMMA=${REPORT_GAMMA:-6}
EVAL_LIMIT=${EVAL_LIMIT:-140}
EVAL_BUDGET=${EVAL_BUDGET:-150}
PY=${PY:-python3}

mkdir -p "$OUT" "$WORK/logs" "$WORK/runs"
LOG="$OUT/log.txt"
log() { echo "[$(date +%H:%M:%S) +${SECONDS}s] $*" | tee -a "$LOG"; }
run_bg() { local name=$1; shift; ("$@" >"$WORK/logs/$name.log" 2>&1 || echo "FAILED: $name (see logs/$name.log)" >>"$WORK/failed.txt") & }

log "heads_gpu: work=$WORK out=$OUT target=$TARGET draft=$DRAFT device=$DEVICE dtype=$DTYPE"
for spec in "$TARGET" "$DRAFT"; do
  if [[ ! -d $spec && $spec != tiny-random && $spec != 7b ]]; then
    log "no checkpoint at $spec: ship the world checkpoints first (evspec world pack) or set TARGET/DRAFT"
    exit 2
  fi
done
{ nvidia-smi -L 2>/dev/null || true; $PY -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__, 'cuda', torch.cuda.is_available())"; git rev-parse HEAD 2>/dev/null || true; } >>"$LOG" 2>&1

# -- 1. the held-out world clips (the exact splits the world models were trained with) --------
if [[ -z "$WORLD" ]]; then
  if [[ -z "$WORLD_CLIPS" || -z "$WORLD_SEED" ]]; then
    line=$(grep -Eo 'world generate --out [^ ]+ --clips [0-9]+ --seed [0-9]+' "$ASSETS/README.md" 2>/dev/null | head -1 || true)
    WORLD_CLIPS=${WORLD_CLIPS:-$(sed -E 's/.*--clips ([0-9]+).*/\1/' <<<"$line")}
    WORLD_SEED=${WORLD_SEED:-$(sed -E 's/.*--seed ([0-9]+).*/\1/' <<<"$line")}
  fi
  if [[ -z "$WORLD_CLIPS" || -z "$WORLD_SEED" ]]; then
    log "cannot tell which world the checkpoints were trained on: set WORLD (a world folder) or WORLD_CLIPS and WORLD_SEED"
    exit 2
  fi
  log "1/5 world subset of (clips=$WORLD_CLIPS, seed=$WORLD_SEED): $N_TRAIN_CLIPS/$N_VAL_CLIPS/$N_TEST_CLIPS clips"
  RES=(); [[ -n $WORLD_RESOLUTION ]] && RES=(--resolution "$WORLD_RESOLUTION")
  $PY -m evspec.training.heads.world_subset --out "$WORK/world" --clips "$WORLD_CLIPS" --seed "$WORLD_SEED" \
    --train "$N_TRAIN_CLIPS" --val "$N_VAL_CLIPS" --test "$N_TEST_CLIPS" "${RES[@]}" 2>&1 | tee -a "$LOG"
  WORLD=$WORK/world
fi
MANIFEST=$WORLD/manifest.json
[[ -f $MANIFEST ]] || MANIFEST=$WORLD
MODELS=(--target "$TARGET" --draft-model "$DRAFT" --device "$DEVICE" --dtype "$DTYPE")
MEM=(--memory events); [[ $PREFILL_HEAD == 1 ]] && MEM=(--memory prefill)

# -- 2. collect: train in shards, val and test alongside (all time-budgeted) -------------------
log "2/5 collect ($COLLECT_SHARDS train shards, budget ${COLLECT_BUDGET}s)"
DATA=$WORK/data
COMMON=(--dataset "$MANIFEST" --out "$DATA" --max-new-tokens "$MAX_NEW" --canvas "$CANVAS" "${MEM[@]}" "${MODELS[@]}")
for ((i = 0; i < COLLECT_SHARDS; i++)); do
  run_bg "collect-train-$i" $PY -m evspec collect "${COMMON[@]}" --split train --num-chunks "$COLLECT_SHARDS" --chunk-idx "$i" --time-budget "$COLLECT_BUDGET"
done
run_bg collect-val $PY -m evspec collect "${COMMON[@]}" --split val --time-budget "$COLLECT_BUDGET"
run_bg collect-test $PY -m evspec collect "${COMMON[@]}" --split test --limit "$TEST_QUESTIONS" --time-budget "$COLLECT_BUDGET"
wait
grep -h "collected" "$WORK"/logs/collect-*.log | tee -a "$LOG" || true

# -- 3. train every module in parallel (time-budgeted; cosine schedule ends at the budget) ---
log "3/5 train (budget ${TRAIN_BUDGET}s per run, in parallel)"
T=(--data "$DATA" --device "$DEVICE" --time-budget "$TRAIN_BUDGET" --batch-size "$BATCH" --eval-every 250 --save-every 1000)
for m in note-adapter bottleneck attention aligner; do
  run_bg "train-$m" $PY -m evspec train --module "$m" --out "$WORK/runs/$m" --steps "$ADAPTER_STEPS" "${T[@]}"
done
run_bg train-lora $PY -m evspec train --module lora --out "$WORK/runs/eventgpt-lora" --steps "$LORA_STEPS" \
  --draft-model "$DRAFT" --data "$DATA" --device "$DEVICE" --time-budget "$TRAIN_BUDGET" --batch-size "$LORA_BATCH" \
  --lr "$LORA_LR" --eval-every 250 --save-every 1000
for s in $SEEDS; do
  run_bg "train-target-head.s$s" $PY -m evspec train --module target-head --out "$WORK/runs/target-head.s$s" --seed "$s" --steps "$HEAD_STEPS" "${T[@]}"
  run_bg "train-event-head.s$s" $PY -m evspec train --module event-head --out "$WORK/runs/event-head.s$s" --seed "$s" --steps "$HEAD_STEPS" "${T[@]}"
done
if [[ $PREFILL_HEAD == 1 ]]; then
  run_bg train-event-head-prefill $PY -m evspec train --module event-head --memory-source prefill \
    --out "$WORK/runs/event-head-prefill.s0" --steps "$HEAD_STEPS" "${T[@]}"
fi
wait
grep -h "best val top-1" "$WORK"/logs/train-*.log | tee -a "$LOG" || true
[[ -f $WORK/failed.txt ]] && tee -a "$LOG" <"$WORK/failed.txt"

# -- 4. evaluate in the engine on held-out clips, offline agreement beside ------------------
log "4/5 eval (γ = $GAMMAS, up to $EVAL_LIMIT test questions, budget ${EVAL_BUDGET}s)"
DRAFTERS=(--drafter eventgpt)
for run in "$WORK"/runs/*; do
  [[ -f $run/best/config.json ]] && DRAFTERS+=(--drafter "$(basename "$run")=$run/best")
done
$PY -m evspec eval --dataset "$MANIFEST" --out "$WORK/eval" "${DRAFTERS[@]}" "${MODELS[@]}" \
  --gamma "$GAMMAS" --report-gamma "$REPORT_GAMMA" --limit "$EVAL_LIMIT" --max-new-tokens "$MAX_NEW" \
  --canvas "$CANVAS" --offline-data "$DATA" --time-budget "$EVAL_BUDGET" >"$WORK/logs/eval.log" 2>&1 \
  || { log "eval failed:"; tail -30 "$WORK/logs/eval.log" | tee -a "$LOG"; }

# -- 5. package: the table, the JSON, the modules to ship, the runs --------------------------
log "5/5 package"
cp "$WORK/eval/eval.md" "$OUT/heads_table.md" 2>/dev/null || echo "no evaluation table" >"$OUT/heads_table.md"
$PY - <<EOF 2>&1 | tee -a "$LOG"
import json, pathlib
from evspec.training.heads.ship import pack_heads
work = pathlib.Path("$WORK")
runs = sorted(p for p in (work / "runs").iterdir() if p.is_dir())
runs = [r for r in runs if "prefill" not in r.name]  # ship the default (events-memory) heads
chosen = pack_heads(runs, work / "ship" / "heads",
                    notes="Made by benchmarks/heads_gpu.sh; see heads_table.md for the engine figures.")
ev = work / "eval" / "eval.json"
out = {"eval": json.loads(ev.read_text()) if ev.is_file() else None, "shipped": chosen, "runs": {}}
for r in sorted((work / "runs").iterdir()):
    cfg = r / "best" / "config.json"
    if cfg.is_file():
        meta = json.loads(cfg.read_text())
        out["runs"][r.name] = {"kind": meta["kind"], "best": meta.get("best"), "step": meta.get("step"),
                              "train": meta.get("train")}
idx = sorted((work / "data").glob("index-*.json"))
out["data"] = {p.name: sum(c["n"] for c in json.loads(p.read_text())["chunks"]) for p in idx}
pathlib.Path("$OUT/heads.json").write_text(json.dumps(out, indent=1) + "\n")
print("shipped:", {k: (v["run"].rsplit("/", 1)[-1], round(v["val_top1"], 3)) for k, v in chosen.items()})
print("examples:", out["data"])
EOF
tar -czf "$OUT/heads_assets.tar.gz" -C "$WORK/ship" heads
(cd "$WORK" && tar -czf "$OUT/runs.tar.gz" --exclude='*.safetensors' --exclude='*.pt' runs logs \
   $(ls eval/engine/*.json* 2>/dev/null) $(ls data/index-*.json 2>/dev/null))
log "done in ${SECONDS}s: $(ls "$OUT" | tr '\n' ' ')"
