#!/usr/bin/env bash
# Acceptance-controlled sweep at real 7B shapes (issue 5): alpha x gamma, fast engine,
# bf16, one GPU.  Usage (GPU machine, repo root):  bash benchmarks/controlled_7b.sh OUTDIR
set -euo pipefail
out=${1:-runs/controlled_7b}
tokens=${TOKENS:-64}
requests=${REQUESTS:-3}
export PYTHONPATH=src HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
first=1
for a in 0.1 0.3 0.5 0.7 0.9; do
  hf=--no-hf-baseline
  if [ $first = 1 ]; then hf="--hf-baseline"; first=0; fi
  python3 -m evspec bench --dataset random:$requests --target 7b --drafters none,eventgpt \
    --gamma 1,2,4,8 --controlled-alpha $a --fast $hf --max-new-tokens $tokens \
    --out "$out/alpha-$a" --no-report
  python3 -m evspec report "$out/alpha-$a" --no-plots > /dev/null
done
