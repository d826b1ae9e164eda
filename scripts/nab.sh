#!/usr/bin/env bash
# Scores Tripline's spend model (core/src/models/spend.rs) on the NAB development split.
#
#   scripts/nab.sh [OUT_DIR] [-- extra args for the runner, e.g. --config '{"half_life_windows":200}']
#
# Builds and runs core/examples/nab.rs in release mode over $NAB_DIR/data (default
# ../shared/nab next to this clone), then prints nabscore.py's table for the three NAB profiles
# and the per-file breakdown. nabscore.py picks ONE threshold per profile for the whole corpus
# (the best one among the scores written), so the runner only has to rank rows well.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
nab="${NAB_DIR:-$root/../shared/nab}"
out="${1:-${TMPDIR:-/tmp}/tripline-nab}"
[ $# -gt 0 ] && shift
[ "${1:-}" = "--" ] && shift

if [ ! -d "$nab/data" ]; then
  echo "nab.sh: no NAB data at $nab/data (set NAB_DIR)" >&2
  exit 2
fi

rm -rf "$out"
cargo run --quiet --release -p tripline-core --example nab -- "$nab/data" "$out" "$@"
python3 "$nab/nabscore.py" "$out" --labels "$nab/labels_dev.json" --profiles "$nab/profiles.json" --per-file
