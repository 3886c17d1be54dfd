#!/usr/bin/env bash
# The PTQ-engine results table (README): Whisper tiny.en, 128 kathleen calibration utterances
# (seed 0), WER on all 593 test utterances, W4 g128 and W3 g128.
# RTN and GPTQ runs skip the full-precision stream (not needed without compensation);
# GPTQ+QEP records, for every layer, the error with and without the correction.
set -euo pipefail
model=${1:-whisper_tiny_en}
common="experiment=ptq_kathleen model=$model runner.progress_bar=false"
fade -m $common quantizer=rtn,gptq compensation=none calibration.track_fp=false bits=w4g128,w3g128 \
  hydra.sweep.dir=outputs/multirun/ptq_kathleen_${model}_baselines
fade -m $common quantizer=gptq compensation=qep compensation.alpha=0.5 bits=w4g128,w3g128 \
  hydra.sweep.dir=outputs/multirun/ptq_kathleen_${model}_qep
