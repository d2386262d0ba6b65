#!/usr/bin/env bash
# Generate the synthetic world, train the world target and drafter (concurrently, one GPU),
# pack fp16 checkpoints + tokenizer + sample test clips, and evaluate on the test split:
# one device call of about 9 minutes (docs/world_training.md).
#
#   PYTHONPATH=src HF_HUB_OFFLINE=1 OUT=/some/dir bash benchmarks/world_train_gpu.sh
#
# Writes to $OUT (7 files): world_assets.tar.gz (unpack with benchmarks/ship_world.sh),
# eval.md, eval.json, train_logs.json, phases.log, train_target.log, train_drafter.log.
# Two-call mode (the target gets the GPU to itself; a warm machine keeps WORK between calls):
#   STAGE=train-target WORK=/tmp/world ... bash benchmarks/world_train_gpu.sh   # generate + target
#   STAGE=finish       WORK=/tmp/world ... bash benchmarks/world_train_gpu.sh   # drafter, pack, eval
# STAGE=all (default) does everything in one call, both models training at once.
# EVSPEC_MICRO=1 runs the same phases at CPU size (a 24-clip 16-px world, micro presets,
# a few steps) to prove the script end to end.  Knobs: CLIPS, TOTAL_S (wall-time goal),
# EVAL_RESERVE_S, ACCEPT_PER_TYPE, SHIP_CLIPS, BATCH, LR, AUX_WEIGHT (0 = answers only),
# WORK (scratch folder).
if [[ ${1:-} == -h || ${1:-} == --help ]]; then sed -n '2,/^[^#]/s/^# \{0,1\}//p' "$0"; exit 0; fi
set -euo pipefail

OUT=${OUT:?set OUT to the output folder}
MICRO=${EVSPEC_MICRO:-0}
mkdir -p "$OUT"
WORK=${WORK:-$(mktemp -d /tmp/evspec_world.XXXXXX)}
mkdir -p "$WORK"
PY=${PYTHON:-python3}
CORES=$(nproc)
export TQDM_MININTERVAL=${TQDM_MININTERVAL:-10}  # progress bars every 10 s in the logs
export PYTHONUNBUFFERED=1

if [[ "$MICRO" == "1" ]]; then
  CLIPS=${CLIPS:-24}; GEN_ARGS="--resolution 16 --render-hz 100"
  PRESET=world-micro; DEVICE=cpu; BATCH=${BATCH:-8}; LR=${LR:-1e-3}; MAX_STEPS=${MAX_STEPS:-40}; WARMUP=5
  EVAL_INTERVAL=20; VAL_GEN=8; TOTAL_S=${TOTAL_S:-600}; EVAL_RESERVE_S=${EVAL_RESERVE_S:-60}
  ACCEPT_PER_TYPE=${ACCEPT_PER_TYPE:-1}; GAMMAS=${GAMMAS:-1,2,4}; SHIP_CLIPS=${SHIP_CLIPS:-2}
  EVAL_LIMIT=${EVAL_LIMIT:-0}; ACCURACY_S=30
else
  CLIPS=${CLIPS:-8000}; GEN_ARGS=""
  PRESET=world; DEVICE=cuda; BATCH=${BATCH:-128}; LR=${LR:-1.5e-3}; MAX_STEPS=${MAX_STEPS:-20000}; WARMUP=100
  EVAL_INTERVAL=1000; VAL_GEN=128; TOTAL_S=${TOTAL_S:-540}; EVAL_RESERVE_S=${EVAL_RESERVE_S:-120}
  ACCEPT_PER_TYPE=${ACCEPT_PER_TYPE:-30}; GAMMAS=${GAMMAS:-1,2,3,4,5,6,7,8}; SHIP_CLIPS=${SHIP_CLIPS:-8}
  EVAL_LIMIT=${EVAL_LIMIT:-0}; ACCURACY_S=${ACCURACY_S:-40}
fi
HALF=$(( CORES / 2 > 1 ? CORES / 2 : 1 ))
STAGE=${STAGE:-all}
case "$STAGE" in all|train-target|finish) ;; *) echo "STAGE=$STAGE: use all, train-target or finish" >&2; exit 2;; esac

log() { echo "[$(date +%H:%M:%S) +${SECONDS}s] $*" | tee -a "$OUT/phases.log"; }
fail() { log "FAILED: $*"; exit 1; }
trap 'log "stopped at line $LINENO (exit $?)"' ERR

log "evspec world training: stage=$STAGE micro=$MICRO clips=$CLIPS preset=$PRESET device=$DEVICE cores=$CORES work=$WORK"
$PY -c "import torch, transformers, sys; print('python', sys.version.split()[0], 'torch', torch.__version__, 'transformers', transformers.__version__, 'cuda', torch.cuda.is_available() and torch.cuda.get_device_name())" 2>&1 | tee -a "$OUT/phases.log"
git rev-parse HEAD 2>/dev/null | sed 's/^/git /' | tee -a "$OUT/phases.log" || true

# -- 1. the world ------------------------------------------------------------------------------
if [[ "$STAGE" != finish ]]; then
T0=$SECONDS
log "phase 1/4: generate $CLIPS clips (seed 0, $CORES workers)"
# shellcheck disable=SC2086
$PY -m evspec world generate --out "$WORK/data" --clips "$CLIPS" --seed 0 --workers "$CORES" $GEN_ARGS \
  >>"$OUT/phases.log" 2>&1 || fail "world generate (see phases.log)"
log "phase 1 done in $(( SECONDS - T0 )) s"
else
  [[ -f "$WORK/data/manifest.json" && -f "$WORK/run_target/model/config.json" ]] \
    || fail "STAGE=finish needs $WORK/data and $WORK/run_target from STAGE=train-target (same WORK, warm machine)"
fi

# -- 2. train (both at once on the one GPU; or one per stage) -------------------------------------
T0=$SECONDS
RESERVE=$EVAL_RESERVE_S; [[ "$STAGE" == train-target ]] && RESERVE=15
BUDGET=$(( TOTAL_S - SECONDS - RESERVE ))
(( BUDGET >= 60 )) || BUDGET=60
ROLES="target drafter"; [[ "$STAGE" == train-target ]] && ROLES=target; [[ "$STAGE" == finish ]] && ROLES=drafter
WORKERS=$HALF; [[ "$STAGE" != all ]] && WORKERS=$CORES
log "phase 2/4: train $ROLES (target seed 0, drafter seed 1), time budget $BUDGET s each"
COMMON=(--data "$WORK/data" --preset "$PRESET" --steps "$MAX_STEPS" --batch-size "$BATCH" --lr "$LR"
        --aux-weight "${AUX_WEIGHT:-1.0}"
        --warmup-steps "$WARMUP" --eval-every "$EVAL_INTERVAL" --val-generate "$VAL_GEN"
        --save-every 100000 --device "$DEVICE" --workers "$WORKERS" --time-budget "$BUDGET")
declare -A PIDS=()
for role in $ROLES; do
  seed=0; [[ $role == drafter ]] && seed=1
  $PY -m evspec world train --role "$role" --out "$WORK/run_$role" --seed "$seed" "${COMMON[@]}" \
    >"$OUT/train_$role.log" 2>&1 &
  PIDS[$role]=$!
done
STATUS=0
for role in $ROLES; do
  wait "${PIDS[$role]}" || { STATUS=1; log "$role training failed:"; tail -n 30 "$OUT/train_$role.log" | tee -a "$OUT/phases.log"; }
done
(( STATUS == 0 )) || fail "training"
if [[ "$STAGE" == train-target ]]; then
  tail -n 1 "$OUT/train_target.log" | tee -a "$OUT/phases.log"
  cp "$WORK/run_target/train_log.json" "$OUT/train_log_target.json"
  log "stage train-target done in $SECONDS s; next: STAGE=finish with the same WORK"
  exit 0
fi
for role in $ROLES; do tail -n 1 "$OUT/train_$role.log" | tee -a "$OUT/phases.log"; done
$PY - "$WORK" "$OUT/train_logs.json" <<'EOF'
import json, sys
from pathlib import Path
work, dest = Path(sys.argv[1]), Path(sys.argv[2])
logs = {role: json.loads((work / f"run_{role}" / "train_log.json").read_text()) for role in ("target", "drafter")}
dest.write_text(json.dumps(logs, indent=1) + "\n")
for role, lg in logs.items():
    val = lg["val"][-1] if lg["val"] else {}
    print(f"{role}: {lg['planned_steps']} steps, {lg.get('step_seconds', float('nan')) * 1e3:.1f} ms/step, "
          f"val loss {val.get('loss', float('nan')):.4f}, exact {val.get('exact', float('nan')):.3f}")
EOF
log "phase 2 done in $(( SECONDS - T0 )) s"

# -- 3. pack what ships (fp16) -----------------------------------------------------------------
T0=$SECONDS
log "phase 3/4: pack fp16 checkpoints, tokenizer and $SHIP_CLIPS test clips"
$PY -m evspec world pack --data "$WORK/data" --target "$WORK/run_target" --draft-model "$WORK/run_drafter" \
  --out "$WORK/assets" --clips "$SHIP_CLIPS" >>"$OUT/phases.log" 2>&1 || fail "world pack"
log "phase 3 done in $(( SECONDS - T0 )) s"

# -- 4. evaluate the shipped (fp16) models on the held-out test split ------------------------------
T0=$SECONDS
ENGINE_BUDGET=$(( TOTAL_S + 15 - SECONDS - ACCURACY_S ))  # end well inside the 10-minute call
(( ENGINE_BUDGET >= 20 )) || ENGINE_BUDGET=20
log "phase 4/4: evaluate on the test split (accuracy on $DEVICE; engine sweep on $CORES CPU processes, at most $ENGINE_BUDGET s)"
$PY -m evspec world eval --target "$WORK/assets/target" --draft-model "$WORK/assets/drafter" \
  --data "$WORK/data" --split test --limit "$EVAL_LIMIT" --acceptance-per-type "$ACCEPT_PER_TYPE" \
  --gamma "$GAMMAS" --device "$DEVICE" --workers "$CORES" --time-budget "$ENGINE_BUDGET" \
  --out "$WORK/eval" \
  >>"$OUT/phases.log" 2>&1 || fail "world eval"
cp "$WORK/eval/eval.md" "$WORK/eval/eval.json" "$OUT/"
cp "$WORK/eval/eval.md" "$WORK/assets/EVAL.md"
log "phase 4 done in $(( SECONDS - T0 )) s"

tar czf "$OUT/world_assets.tar.gz" -C "$WORK/assets" .
SIZE=$(stat -c %s "$OUT/world_assets.tar.gz")
log "world_assets.tar.gz: $(( SIZE / 1024 )) KiB"
(( SIZE <= 16 * 1024 * 1024 )) || log "WARNING: the tarball exceeds 16 MiB and will not come back from the device"
log "all phases done in $SECONDS s"
