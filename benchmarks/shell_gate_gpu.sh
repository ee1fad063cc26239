#!/usr/bin/env bash
# The embedded shell gate (panowan.data.shell_gate) from more rooms than two CPU cores can prepare in a session:
# the device machine's 16 cores synthesise, prepare and compute the gate's features of ROOMS hard rooms (synth seed
# 990001, 9 views at 256x512; its first 288 rooms are those of BENCHMARKS.md's 288-room probe), its GPU trains the
# gate, and the five held-out sets of the gate probe are made there too, for a first look (the published figures are
# the local CPU evaluation of the returned gate: `learned_gate_probe.py --gate FILE`).
# PROBE=cnn instead trains benchmarks/cnn_gate_probe.py (an ERP U-Net correcting the embedded gate from the whole
# view) for SECONDS on the GPU and evaluates it on the same held-out sets.
# One call of at most 10 minutes (the device tool's limit), from a bare machine; diffusers carried as wheels in .whl.
# (2026-12-08: 576 rooms took 294 s to synthesise and prepare on the 16 cores, and the call ran out of time in the
# features; PROBE=cnn with 192 rooms was the call made next.)
# Usage: [PROBE=mlp|cnn] [SECONDS_TRAIN=180] bash benchmarks/shell_gate_gpu.sh OUT_DIR [ROOMS] [PIXELS]
set -euo pipefail
out=$1 rooms=${2:-1152} pixels=${3:-2048}
if [[ -d .whl ]]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:$PWD/src
fi
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1
work=${WORK:-/tmp/shell_gate}
gen() {  # name seed rooms views
  python3 -m panowan synth --out "$work/$1" --rooms "$3" --views "$4" --height 256 --width 512 --seed "$2" \
    --difficulty hard --workers 16 > "$work/$1.log" 2>&1
  python3 -m panowan prepare --data_root "$work/$1" --workers 16 >> "$work/$1.log" 2>&1
}
mkdir -p "$work"
SECONDS=0
gen train 990001 "$rooms" 9
echo "train rooms ready: ${SECONDS}s" | tee "$out/timing.txt"
gen hard 920001 8 5; gen hard2 930001 8 5; gen hard3 950001 8 5; gen hard4 960001 8 5; gen demo 900002 3 5
echo "held-out sets ready: ${SECONDS}s" | tee -a "$out/timing.txt"
held=("$work/hard" "$work/hard2" "$work/hard3" "$work/hard4" "$work/demo")
if [[ ${PROBE:-mlp} == cnn ]]; then
  python3 benchmarks/cnn_gate_probe.py --train_root "$work/train" --eval_roots "${held[@]}" --workers 16 \
    --device "${DEVICE:-cuda}" --seconds "${SECONDS_TRAIN:-180}" --json "$out/cnn_gate_probe.json" \
    --save "$out/cnn_gate.pt" > "$out/probe.log" 2>&1
  echo "cnn gate trained and evaluated: ${SECONDS}s" | tee -a "$out/timing.txt"
  exit 0
fi
python3 benchmarks/learned_gate_probe.py --train_root "$work/train" \
  --eval_roots "${held[@]}" --candidates S H F D --context \
  --train_pixels "$pixels" --workers 16 --device "${DEVICE:-cuda}" --json "$out/shell_gate_probe.json" \
  --save "$out/shell_gate.safetensors" > "$out/probe.log" 2>&1
echo "gate trained and evaluated: ${SECONDS}s" | tee -a "$out/timing.txt"
