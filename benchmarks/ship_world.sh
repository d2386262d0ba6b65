#!/usr/bin/env bash
# Ship the world models: unpack the GPU run's world_assets.tar.gz (benchmarks/world_train_gpu.sh)
# into src/evspec/assets/world, check the result, and run the demo on it.
#
#   bash benchmarks/ship_world.sh DIR        # DIR holds world_assets.tar.gz (+ eval.md)
#
# Layout after shipping: target/ drafter/ tokenizer/ clips/ manifest.json world_extra/
# README.md (the exact commands and seeds) EVAL.md (the evaluation report).
if [[ ${1:-} == -h || ${1:-} == --help ]]; then sed -n '2,/^[^#]/s/^# \{0,1\}//p' "$0"; exit 0; fi
set -euo pipefail

SRC=${1:?usage: benchmarks/ship_world.sh DIR_WITH_world_assets.tar.gz}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
DEST=${SHIP_DEST:-$ROOT/src/evspec/assets/world}  # SHIP_DEST (ending in /world) for trials
[[ "$(basename "$DEST")" == world ]] || { echo "ship_world: SHIP_DEST must end in /world" >&2; exit 1; }
TAR="$SRC/world_assets.tar.gz"
[[ -f "$TAR" ]] || { echo "ship_world: $TAR not found" >&2; exit 1; }

NEW="$DEST.new"
rm -rf "$NEW"
mkdir -p "$NEW"
tar xzf "$TAR" -C "$NEW"
for need in manifest.json README.md target/config.json target/model.safetensors \
            drafter/config.json drafter/model.safetensors tokenizer/target/tokenizer.json clips; do
  [[ -e "$NEW/$need" ]] || { echo "ship_world: the archive lacks $need" >&2; rm -rf "$NEW"; exit 1; }
done
if [[ -f "$SRC/eval.md" && ! -f "$NEW/EVAL.md" ]]; then
  cp "$SRC/eval.md" "$NEW/EVAL.md"
fi
N_CLIPS=$(find "$NEW/clips" -mindepth 1 -maxdepth 1 -type d | wc -l)
(( N_CLIPS >= 1 && N_CLIPS <= 10 )) || { echo "ship_world: $N_CLIPS clips (want 1..10)" >&2; exit 1; }

rm -rf "$DEST"
mv "$NEW" "$DEST"
echo "shipped into $DEST ($(du -sh "$DEST" | cut -f1), $N_CLIPS clips):"
du -sh "$DEST"/target "$DEST"/drafter "$DEST"/clips

cd "$ROOT"
EVSPEC_ASSETS="$(dirname "$DEST")" PYTHONPATH=src HF_HUB_OFFLINE=1 python3 -c "
from evspec.demo import world_available, load_world_models, load_world_cases
assert world_available(), 'the shipped assets are incomplete'
t, d = load_world_models()
print('loaded:', type(t).__name__, type(d).__name__, '-', len(load_world_cases(t, d, limit=6)), 'demo questions')
"
echo "next: PYTHONPATH=src python3 -m evspec demo   (then commit src/evspec/assets/world)"
