#!/usr/bin/env bash
# Train configs/colournet.yaml on a lent GPU machine (how the shipped colour model was trained; see the model card).
# The data and rasterio wheels arrive in earlier calls under /tmp/gd and /tmp/site (the machine's 64 MiB limit
# per call); this last call merges the final data part, trains to 2/3 of the steps (a kept snapshot), resumes
# to the end, and leaves both models and the log in $OUT.
set -uo pipefail
cp -r .gpudata_3/. /tmp/gd/ 2>/dev/null || true
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
sed -i "s#\.\./\.\./shared/data/#/tmp/gd/#g" configs/colournet.yaml
run=$PWD/runs/gpu; snap=${SNAP:-4000}
args=(--config configs/colournet.yaml --device cuda -q "run_dir=$run" train.val_every=1000000 train.max_minutes=0
      train.threads=4 train.ckpt_every=1000)
timeout "${T1:-150}" python3 -m sarcolor train "${args[@]}" "train.stop_at=$snap" && cp "$run/model.safetensors" "$OUT/gpu-${snap}.safetensors"
timeout "${T2:-90}" python3 -m sarcolor train "${args[@]}" --resume
cp "$run/model.safetensors" "$OUT/gpu-end.safetensors"; cp "$run/log.csv" "$run/split.json" "$run/config.json" "$OUT/"
tail -3 "$run/log.csv"; ls -la "$OUT"
