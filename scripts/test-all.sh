#!/usr/bin/env bash
# Runs every test tier that exists, installing what the tiers need first.
#
#   tier 1-3  unit tests, planner scenarios and property tests, simulator runs of
#             every example scenario (cargo test --workspace)
#   tier 4-5  AWS adapter against moto, end-to-end against a real control plane:
#             not built yet (issues 3-5); this script says so instead of passing quietly.
#
# Heavy builds are cached under $HOME/.cache/batch-autoscaler/ (none needed yet).
set -euo pipefail
cd "$(dirname "$0")/.."

phase() { printf '\n=== %s (%s)\n' "$1" "$(date -u +%H:%M:%S)"; }

phase "build"
start=$(date +%s)
cargo build --workspace --all-targets
echo "build took $(( $(date +%s) - start ))s"

phase "tiers 1-3: cargo test --workspace"
start=$(date +%s)
cargo test --workspace
echo "tests took $(( $(date +%s) - start ))s"

phase "README quick-start command"
cargo run --quiet -p batch-autoscaler -- simulate examples/cpu-burst.yaml --report target/readme-check.json > /dev/null
test -s target/readme-check.json

phase "skipped"
echo "SKIPPED tier 4 (AWS adapter against moto server): not built yet, see issue 3"
echo "SKIPPED tier 5 (end-to-end with a real control plane): not built yet, see issue 5"
