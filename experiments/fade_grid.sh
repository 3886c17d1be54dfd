#!/usr/bin/env bash
# The FADE paper grid on kathleen for one model, most informative runs first, resumable:
# finished runs (complete metrics.json, same config) are skipped, so re-running this script after an
# interruption continues where it stopped. One `fade` call per run, so a failing run is logged and
# the rest go on.
#   experiments/fade_grid.sh [model] [extra overrides...]      e.g. experiments/fade_grid.sh whisper_base runner.device=cuda
# Then: fade-aggregate outputs/multirun/fade_grid_<model name>   and   fade-dashboard <same folder>
set -u
MODEL=${1:-whisper_tiny_en}; shift || true
SEEDS=${SEEDS:-"0 1 2 3 4"}
BITS=${BITS:-"w3g128 w4g128"}
ALPHAS=${ALPHAS:-"0.25 0.75 1.0"}   # 0.5 runs in the main block; α=0 is GPTQ on X̂ (method=gptq)
DEV=${DEV:-100}                      # dev utterances per QEP run, for choosing the global α without the test set
run() { fade -m experiment=fade_grid model="$MODEL" runner.progress_bar=false "$@" || echo "FAILED: $*" >&2; }

for bits in $BITS; do
  run bits="$bits" method=rtn "$@"                     # RTN uses no data: one run per width
  for seed in $SEEDS; do
    run bits="$bits" calibration.seed="$seed" method=gptq "$@"
    run bits="$bits" calibration.seed="$seed" method=qep compensation.alpha=0.5 calibration.dev_samples="$DEV" "$@"
    run bits="$bits" calibration.seed="$seed" method=fade "$@"
  done
done
for bits in $BITS; do
  for seed in $SEEDS; do
    for alpha in $ALPHAS; do
      run bits="$bits" calibration.seed="$seed" method=qep compensation.alpha="$alpha" calibration.dev_samples="$DEV" "$@"
    done
  done
done
