#!/usr/bin/env bash
# The FADE paper grid on kathleen for one model, resumable: finished runs (complete metrics.json,
# same config) are skipped, so re-running this script after an interruption, or on a fresh clone of
# the repository (the reference sweep folders are committed, outputs/README.md), continues where it
# stopped. One `fade` call per run, so a failing run is logged and the rest go on.
#   experiments/fade_grid.sh [model] [extra overrides...]      e.g. experiments/fade_grid.sh whisper_base runner.device=cuda
#   STAGES="followup main" BITS=w3g128 experiments/fade_grid.sh     # pick and order the stages
#   PLAN=1 experiments/fade_grid.sh moonshine_base_en            # what is done on this machine, what is left, how long
#   ALL=1 experiments/fade_grid.sh                                # hand every run to `fade`, finished ones too (they skip)
# Then: fade-aggregate outputs/multirun/fade_grid_<model name>   and   fade-dashboard <same folder>
#
# Stages (default order: main alpha followup ablate):
#   main      per width: RTN once (it uses no data); per seed GPTQ, QEP α=0.5 (+dev), FADE defaults
#   alpha     the global-α baseline: QEP α ∈ ALPHAS per width and seed (+dev); α=0 gives GPTQ's weights, scored on dev
#   followup  FADE variants singled out by the ablations or designed from them, on every seed (paired with QEP α=0.5 of main)
#   ablate    one signal at a time, every candidate, on ABLATION_BITS × ABLATION_SEEDS (+dev)
set -u
MODEL=${1:-whisper_tiny_en}; shift || true
STAGES=${STAGES:-"main alpha followup ablate"}
SEEDS=${SEEDS:-"0 1 2 3 4"}
BITS=${BITS:-"w3g128 w4g128"}
# α = 0 is GPTQ's weights (identical hypotheses) plus a dev score, so the dev split can choose "no
# compensation"; values are spelt as in the committed folders (1, not 1.0: a folder's name is its overrides).
ALPHAS=${ALPHAS-"0 0.25 0.75 1"}
DEV=${DEV:-100}                      # dev utterances per run that may be chosen on dev (never the test set)
# Each entry: overrides of one FADE variant, commas between them. The held-out gain alone (the
# ablations' pick), and the direct held-out step (docs/fade.md §5: no z-score, no free parameter).
FOLLOWUP=${FOLLOWUP-"compensation.v_int=null,compensation.r_calib=heldout_gain compensation.v_int=null,compensation.r_calib=heldout_alpha_full,compensation.mapping=direct,compensation.alpha_min=0,compensation.alpha_max=1"}
ABLATION_BITS=${ABLATION_BITS:-w3g128}
ABLATION_SEEDS=${ABLATION_SEEDS-"0 1"}
V_INT=${V_INT-"rtn_error kurtosis outlier_ratio crest_factor low_stable_rank"}
R_CALIB=${R_CALIB-"predicted_gain heldout_gain heldout_alpha correction_size input_discrepancy hessian_effective_rank hessian_conditioning"}
PLAN=${PLAN:-}                       # PLAN=1: run nothing; list each run as done/pending on this machine, with time estimates (fade-plan)
ALL=${ALL:-}                         # ALL=1: hand every run to `fade`, finished ones included (fade skips them itself)
# The stages only list their runs, one shell-quoted line of overrides each; what runs is decided below.
RUNS_FILE=$(mktemp); trap 'rm -f "$RUNS_FILE"' EXIT
run() { printf '%q ' experiment=fade_grid model="$MODEL" runner.progress_bar=false "$@" >> "$RUNS_FILE"; echo >> "$RUNS_FILE"; }

stage_main() {
  for bits in $BITS; do
    run bits="$bits" method=rtn "$@"
    for seed in $SEEDS; do
      run bits="$bits" calibration.seed="$seed" method=gptq "$@"
      run bits="$bits" calibration.seed="$seed" method=qep compensation.alpha=0.5 calibration.dev_samples="$DEV" "$@"
      run bits="$bits" calibration.seed="$seed" method=fade "$@"
    done
  done
}
stage_alpha() {
  for bits in $BITS; do
    for seed in $SEEDS; do
      for alpha in $ALPHAS; do
        run bits="$bits" calibration.seed="$seed" method=qep compensation.alpha="$alpha" calibration.dev_samples="$DEV" "$@"
      done
    done
  done
}
stage_followup() {
  for bits in $BITS; do
    for seed in $SEEDS; do
      run bits="$bits" calibration.seed="$seed" method=qep compensation.alpha=0.5 calibration.dev_samples="$DEV" "$@"
      for variant in $FOLLOWUP; do
        # shellcheck disable=SC2086
        run bits="$bits" calibration.seed="$seed" method=fade ${variant//,/ } calibration.dev_samples="$DEV" "$@"
      done
    done
  done
}
stage_ablate() {
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
}
for stage in $STAGES; do
  declare -F "stage_$stage" >/dev/null || { echo "unknown stage $stage (main alpha followup ablate)" >&2; exit 2; }
  "stage_$stage" "$@"
done
if [ -n "$PLAN" ]; then fade-plan "$RUNS_FILE"; exit; fi
# Only the runs not finished on this machine go to `fade`. fade would skip a finished one too, but
# after a process start and a Hydra composition (seconds each, minutes over a resumed grid), and
# Hydra rewrites the run's committed .hydra/ files before the skip. fade-plan makes fade's own
# resume check (fade.tasks.resume), lists a run named by two stages once, and keeps the order.
if [ -z "$ALL" ]; then
  todo=$(fade-plan --pending "$RUNS_FILE") || { echo "fade-plan could not list the pending runs (ALL=1 runs every one)" >&2; exit 2; }
  printf '%s\n' "$todo" > "$RUNS_FILE"
fi
while IFS= read -r line <&3; do
  [ -n "$line" ] || continue
  eval "overrides=($line)"   # shell-quoted by printf %q above or shlex.join in fade-plan
  fade -m "${overrides[@]}" || echo "FAILED: $line" >&2
done 3< "$RUNS_FILE"
