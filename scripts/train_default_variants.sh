#!/usr/bin/env bash
# Training candidates of the embedded default model on a lent GPU: two recipes of scripts/train_default_model.py
# side by side on one GPU for the same time budget (the small model leaves a GPU mostly idle, so they
# share it). Each exported model comes back split in two parts (for the 16 MiB transfer limit); the choice
# between them is made afterwards on VALIDATION rooms (synth seed 800001: neither the training seed 0 nor
# the demo's 900002), e.g.
#
#     bash scripts/train_default_variants.sh OUT_DIR [BUDGET_SECONDS]
#     cat OUT_DIR/a.default_model.safetensors.part-* > a/default_model.safetensors   # + a.default_model.json
#     panowan demo --model_dir a --seed 800001 --rooms 8 --out val_a
set -euo pipefail
out=${1:?usage: train_default_variants.sh OUT_DIR [BUDGET_SECONDS]}
budget=${2:-420}
mkdir -p "$out"
here=$(cd "$(dirname "$0")" && pwd)
declare -A flags=(
  [a]="--preset small-p4 --lr 1e-3 --lora_rank 48 --hole_weight 0"
  [b]="--preset small-p4 --lr 1e-3 --lora_rank 48 --hole_weight 3"
)
for v in "${!flags[@]}"; do
  # shellcheck disable=SC2086  # the flags are meant to split
  OMP_NUM_THREADS=3 "${PYTHON:-python3}" "$here/train_default_model.py" --work "/tmp/dm_$v" \
    --export "/tmp/dm_$v/export" --time_budget "$budget" --batch 32 --workers 4 --eval_rooms 0 \
    ${flags[$v]} >"$out/log_$v.txt" 2>&1 &
done
wait
for v in "${!flags[@]}"; do
  src=/tmp/dm_$v/export
  [[ -f $src/default_model.safetensors ]] || { echo "variant $v: no model (see log_$v.txt)"; continue; }
  cp "$src/default_model.json" "$out/$v.default_model.json"
  size=$(stat -c %s "$src/default_model.safetensors")
  split -b $(((size + 1) / 2)) -d -a 1 "$src/default_model.safetensors" "$out/$v.default_model.safetensors.part-"
  grep -a "trained to step" "$out/log_$v.txt" | tail -1
done
