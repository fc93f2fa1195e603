#!/usr/bin/env bash
# The colour model's ablation sweep on a lent GPU machine (see the model card), run from the repo root there.
# The data travels in ignored folders .gpudata_1.. (the files configs/colournet.yaml reads, laid out as
# ../shared/data is) and rasterio as wheels in .whl (the device image lacks it). Usage there:
#   bash experiments/device_sweep.sh MINUTES VARIANTS   e.g. 6.5 ref,norebal,norender,nobalance
set -euo pipefail
minutes=${1:-6.5}; only=${2:-ref,norebal,norender,nobalance}
if [ ! -d .site/rasterio ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target .site .whl/*.whl
fi
export PYTHONPATH=$PWD/.site:$PWD PYTHONUNBUFFERED=1
mkdir -p .gpudata
for p in .gpudata_*; do cp -rl "$p"/. .gpudata/; done
sed -i 's#\.\./\.\./shared/data/#../.gpudata/#g' configs/colournet.yaml   # this machine's copy of the data
python3 experiments/recipe_sweep.py --device cuda --minutes "$minutes" --only "$only" --no-evaluate \
  --runs "$PWD/runs/sweep" 2>&1 | tail -20
out=${OUT:-/tmp/out}; mkdir -p "$out"
for v in ${only//,/ }; do  # one file per variant (the machine returns at most 8 files)
  (cd runs/sweep && tar cf "$out/$v.tar" "$v"-*.safetensors 2>/dev/null) || true
done
tar czf "$out/logs.tgz" runs/sweep/*.log runs/sweep/*/log.csv runs/sweep/*/split.json 2>/dev/null || true
ls -la "$out"
