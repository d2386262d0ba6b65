#!/usr/bin/env bash
# Acceptance-controlled sweep at real 7B shapes: alpha x gamma x drafter, fast
# engine, bf16, one GPU.  Usage (GPU machine, repo root):  bash benchmarks/controlled_7b.sh OUTDIR
#
# Knobs (environment): ALPHAS ["0.1 0.3 0.5 0.7 0.9"], GAMMAS [1,2,4,8], DRAFTERS [none,eventgpt],
# TOKENS [64], REQUESTS [3], TARGET [7b], DEVICE [auto], COMPILE=1 adds --compile, HEADS=1 adds event-head and target-head
# with random weights of the 7B shapes (--drafter-path NAME=untrained: what they cost per token
# is real, what they draft is replaced by the controlled stream).  CPU rehearsal:
#   TARGET=tiny-random DEVICE=cpu ALPHAS=0.7 GAMMAS=2 HEADS=1 TOKENS=8 REQUESTS=1 bash benchmarks/controlled_7b.sh /tmp/c
if [[ ${1:-} == -h || ${1:-} == --help ]]; then sed -n '2,/^[^#]/s/^# \{0,1\}//p' "$0"; exit 0; fi
set -euo pipefail
out=${1:-runs/controlled_7b}
tokens=${TOKENS:-64}
requests=${REQUESTS:-3}
alphas=${ALPHAS:-"0.1 0.3 0.5 0.7 0.9"}
gammas=${GAMMAS:-1,2,4,8}
drafters=${DRAFTERS:-none,eventgpt}
target=${TARGET:-7b}
device=${DEVICE:-auto}
heads=()
if [[ ${HEADS:-0} == 1 ]]; then
  drafters="$drafters,event-head,target-head"
  heads=(--drafter-path event-head=untrained --drafter-path target-head=untrained)
fi
compile=()
[[ ${COMPILE:-0} == 1 ]] && compile=(--compile)  # the compiled fast engine
export PYTHONPATH=${PYTHONPATH:-src} HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
first=1
for a in $alphas; do
  hf=--no-hf-baseline
  if [ $first = 1 ]; then hf="--hf-baseline"; first=0; fi
  python3 -m evspec bench --dataset random:$requests --target "$target" --device "$device" --drafters "$drafters" \
    --gamma "$gammas" --controlled-alpha $a --fast "${compile[@]}" $hf --max-new-tokens $tokens "${heads[@]}" \
    --out "$out/alpha-$a" --no-report
  python3 -m evspec report "$out/alpha-$a" --no-plots > /dev/null
done
