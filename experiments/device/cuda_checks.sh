#!/usr/bin/env bash
# The one command to run on a lent GPU machine (the `device` tool), prepared so a 15-minute lease
# is spent measuring, not installing. From the repo root there, with .whl/ carried
# (experiments/device/fetch_wheels.sh builds it here):
#
#   bash experiments/device/travel_light.sh on      # here: the grid records are over the 64 MiB limit
#   run(command="bash experiments/device/cuda_checks.sh", carry=[".whl"], timeout_s=480)
#   bash experiments/device/travel_light.sh off     # here, once the run is back
#
# Session 17 (H100, torch 2.11) took 216 s for steps 1-3; step 4 adds about a minute.
#
# 1. installs the carried wheels into /tmp/site (the machine reaches no package index);
# 2. runs tests/test_cuda.py: calibration of all three families and evaluation on the GPU against
#    the CPU, statistics kept on the GPU, and the CLI end to end with runner.device=cuda;
# 3. times calibration and evaluation of tiny.en- and base-shaped Whisper on the GPU
#    (experiments/bench/device_shapes.py), with a CPU baseline at 16 utterances in the same run;
# 4. prints how far GPU calibration drifts from the CPU's, with and without TF32, beside what a
#    1e-6 nudge does on the CPU alone (experiments/device/cuda_agreement.py).
# Logs and JSON land in $OUT (what the tool brings back); each step's status is in $OUT/status.txt.
set -uo pipefail
OUT="${OUT:-outputs/device}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1

python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || { echo "wheel install failed: rebuild .whl with experiments/device/fetch_wheels.sh" | tee "$OUT/status.txt"; exit 1; }
export PYTHONPATH="/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}"

{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python3 -c "import torch, transformers; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0)); print('transformers', transformers.__version__)"
  nproc; } 2>&1 | tee "$OUT/machine.txt"

timeout 240 python3 -m pytest tests/test_cuda.py -q -p no:cacheprovider 2>&1 | tee "$OUT/test_cuda.log"
echo "test_cuda rc=${PIPESTATUS[0]}" | tee "$OUT/status.txt"

timeout 270 python3 experiments/bench/device_shapes.py --device cuda --cpu-n 16 --out "$OUT/device_shapes.json" 2>&1 \
    | grep -v "max_new_tokens" | tee "$OUT/device_shapes.log"
echo "device_shapes rc=${PIPESTATUS[0]}" | tee -a "$OUT/status.txt"

timeout 180 python3 experiments/device/cuda_agreement.py 2>&1 | grep -v Warning | tee "$OUT/agreement.txt"
echo "agreement rc=${PIPESTATUS[0]}" | tee -a "$OUT/status.txt"
