#!/usr/bin/env bash
# The device tool sends every tracked file, and the committed grid records (outputs/multirun,
# ~140 MiB of hypotheses) are over its 64 MiB limit; the GPU checks need none of them.
#
#   bash experiments/device/travel_light.sh on    # before run(...): the records stop travelling
#   bash experiments/device/travel_light.sh off   # after: index and ignore rules as they were
#
# "on" drops the records from the index only (the files stay on disk, untouched) and hides them
# with a nested .gitignore, which outranks the repo's own "!/outputs/multirun/fade_grid_*/" rule;
# "off" puts the index back to HEAD for that folder and removes the .gitignore. Nothing is
# committed either way; do not commit between the two.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
case "${1:-}" in
  on)  git rm -r --cached -q outputs/multirun
       printf '*\n' > outputs/multirun/.gitignore
       echo "travelling: $(git ls-files -z | du -cb --files0-from=- | tail -1 | cut -f1) bytes tracked" ;;
  off) rm -f outputs/multirun/.gitignore
       git reset -q -- outputs/multirun
       git status --short -- outputs/multirun | head -5 ;;
  *)   echo "usage: $0 on|off" >&2; exit 2 ;;
esac
