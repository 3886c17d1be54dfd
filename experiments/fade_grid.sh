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
ALPHAS=${ALPHAS-"0.25 0.75 1.0"}   # 0.5 runs in the main block; α=0 is GPTQ on X̂ (method=gptq)
DEV=${DEV:-100}                      # dev utterances per QEP run, for choosing the global α without the test set
# Signal ablations (after the grid; ABLATE=0 skips them): FADE with one signal at a time, each candidate,
# scored on the dev split too, so the winning signal is chosen on dev and reported on test.
ABLATE=${ABLATE:-1}
ABLATION_BITS=${ABLATION_BITS:-w3g128}
ABLATION_SEEDS=${ABLATION_SEEDS-"0 1"}
V_INT=${V_INT-"rtn_error kurtosis outlier_ratio crest_factor low_stable_rank"}
R_CALIB=${R_CALIB-"predicted_gain heldout_gain heldout_alpha correction_size input_discrepancy hessian_effective_rank hessian_conditioning"}
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
[ "$ABLATE" = 1 ] || exit 0
for bits in $ABLATION_BITS; do
  for seed in $ABLATION_SEEDS; do
    for v in $V_INT; do
      run bits="$bits" calibration.seed="$seed" method=fade compensation.r_calib=null compensation.v_int="$v" calibration.dev_samples="$DEV" "$@"
    done
    for r in $R_CALIB; do
      run bits="$bits" calibration.seed="$seed" method=fade compensation.v_int=null compensation.r_calib="$r" calibration.dev_samples="$DEV" "$@"
    done
  done
done
