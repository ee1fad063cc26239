#!/usr/bin/env bash
# Training candidates of the embedded default model on a lent machine, chosen on validation rooms there.
#
#     bash benchmarks/train_default_variants.sh OUT_DIR BUDGET_SECONDS NAME='RECIPE FLAGS' [NAME='RECIPE FLAGS' ...]
#     bash benchmarks/train_default_variants.sh out 390 a='--preset small-p4 --lora_rank 0 --batch 32'
#
# Variants that train on the same rooms should share them: give each the same `--data DIR` (built once, by
# whichever variant gets there first, while the others wait).
#
# Each variant runs scripts/train_default_model.py for BUDGET_SECONDS of probe + training, variant i on GPU
# i mod (number of GPUs): several variants share a GPU when there are fewer GPUs (the small models leave one
# mostly idle). Every exported model is then evaluated by `panowan demo` on VAL_ROOMS (default 8; 0: no
# evaluation) VALIDATION rooms (synth seed VAL_SEED, default 800001: neither the training seed 0 nor the
# demo's 900002), against OpenCV Telea, in at most EVAL_TIMEOUT seconds (default 120) with EVAL_THREADS threads
# (default 2). OUT_DIR gets summary.json (every variant; the validation hole metrics of those evaluated in
# time, best first, then the others), the logs and metrics in logs.tar.gz, and the first KEEP (default 2)
# models of that order, each one NAME.model.tar (its default_model.json and .safetensors), split into
# NAME.model.tar.part-0, -1 ... when over the 15 MiB a returned file may hold:
#
#     cat OUT_DIR/a.model.tar* | tar -x -C a        # a/default_model.json + a/default_model.safetensors
#     panowan demo --model_dir a --rooms 8          # the final check, on the demo's own seed
set -euo pipefail
out=${1:?usage: train_default_variants.sh OUT_DIR BUDGET_SECONDS NAME=FLAGS...}
budget=${2:?usage: train_default_variants.sh OUT_DIR BUDGET_SECONDS NAME=FLAGS...}
shift 2
(($# > 0)) || { echo "give at least one NAME='FLAGS' variant" >&2; exit 2; }
here=$(cd "$(dirname "$0")" && pwd)
py=${PYTHON:-python3}
gpus=$(nvidia-smi -L 2>/dev/null | wc -l || true)
gpus=$((gpus > 0 ? gpus : 1))
val_seed=${VAL_SEED:-800001}
keep=${KEEP:-2}
mkdir -p "$out"
names=()
i=0
for spec in "$@"; do
  name=${spec%%=*}
  flags=${spec#*=}
  [[ $name =~ ^[A-Za-z0-9_]+$ && $name != "$spec" ]] || { echo "bad variant '$spec' (want NAME='FLAGS')" >&2; exit 2; }
  names+=("$name")
  # A machine kept warm between calls still holds the last call's folders: a same-named variant must not
  # resume that run (the trainer would take its finished checkpoint and train nothing).
  rm -rf "/tmp/dm_$name"
  # shellcheck disable=SC2086  # the flags are meant to split
  CUDA_VISIBLE_DEVICES=$((i % gpus)) OMP_NUM_THREADS=${OMP_PER_VARIANT:-4} "$py" "$here/train_default_model.py" \
    --work "/tmp/dm_$name" --export "/tmp/dm_$name/export" --time_budget "$budget" --eval_rooms 0 $flags \
    >"$out/log_$name.txt" 2>&1 &
  i=$((i + 1))
done
wait || true
for name in "${names[@]}"; do
  [[ -f /tmp/dm_$name/export/default_model.safetensors ]] || { echo "variant $name: no model (see log_$name.txt)"; continue; }
  grep -a "trained to step" "$out/log_$name.txt" | tail -1
  ((${VAL_ROOMS:-8} > 0)) || continue
  OMP_NUM_THREADS=${EVAL_THREADS:-2} timeout "${EVAL_TIMEOUT:-120}" "$py" -m panowan demo --model_dir "/tmp/dm_$name/export" \
    --seed "$val_seed" --rooms "${VAL_ROOMS:-8}" --baselines telea --out "/tmp/dm_$name/val" >"$out/val_$name.txt" 2>&1 &
done
wait || true
"$py" - "$out" "$keep" "${names[@]}" <<'EOF'
import io, json, sys, tarfile
from pathlib import Path

out, keep, names = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]
PART = 15 << 20
rows = []
for name in names:
    export = Path(f"/tmp/dm_{name}/export")
    if not (export / "default_model.safetensors").is_file():
        continue
    train = json.loads((export / "default_model.json").read_text())["train"]
    row = {"name": name, "recipe": train["recipe"], "steps": train["steps"]}
    path = Path(f"/tmp/dm_{name}/val/metrics.json")
    if path.is_file():  # {"model" | "telea": {"mean": {"hole": {...}}}}
        metrics = json.loads(path.read_text())
        row.update({f"{m}_{k}": metrics[m]["mean"]["hole"][k] for m in metrics for k in ("psnr", "absrel")})
    rows.append(row)
rows.sort(key=lambda r: -r.get("model_psnr", float("-inf")))  # stable: the unevaluated keep their order
(out / "summary.json").write_text(json.dumps(rows, indent=1))
for r in rows[:keep]:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for file in ("default_model.json", "default_model.safetensors"):
            tar.add(f"/tmp/dm_{r['name']}/export/{file}", arcname=file)
    data = buffer.getvalue()
    if len(data) <= PART:
        (out / f"{r['name']}.model.tar").write_bytes(data)
    else:
        for part, start in enumerate(range(0, len(data), PART)):
            (out / f"{r['name']}.model.tar.part-{part}").write_bytes(data[start : start + PART])
print(json.dumps(rows, indent=1))
EOF
staging=$(mktemp -d)
mv "$out"/log_*.txt "$out"/val_*.txt "$staging"/ 2>/dev/null || true
for name in "${names[@]}"; do
  cp "/tmp/dm_$name/run/metrics.jsonl" "$staging/metrics_$name.jsonl" 2>/dev/null || true
done
tar -czf "$out/logs.tar.gz" -C "$staging" .
