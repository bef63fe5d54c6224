#!/usr/bin/env bash
# Runs every test tier that exists, installing what the tiers need first.
#
#   tier 1-3  unit tests, planner scenarios and property tests, simulator runs of
#             every example scenario (cargo test --workspace)
#   tier 4    AWS adapter against moto server (crates/aws/tests/moto.rs; the
#             script starts the server)
#   tier 5    end-to-end against a real control plane, KWOK, moto and the binary
#             (crates/e2e; the script builds the control plane, the workspace run
#             below runs the scenarios)
#
#   readme    the README's first command as written (`cargo run -p batch-autoscaler --
#             simulate …`, a build without the `cloud` feature) and the binary's own
#             tests in that build; everything else builds with the feature
#
#   bench     a small `batch-autoscaler bench` run: the harness works and prints its
#             JSON keys (a smoke check, never a timed assertion)
#
# Heavy builds are cached by version under $HOME/.cache/batch-autoscaler/ (the moto
# venv, helm, cargo-deny, the control plane and KWOK): a warm run skips them.
set -euo pipefail
cd "$(dirname "$0")/.."

phase() { printf '\n=== %s (%s)\n' "$1" "$(date -u +%H:%M:%S)"; }

mkdir -p target
# The control plane for tier 5 builds in the background (niced: it takes the CPU the
# Rust build leaves idle) and is waited for in the tier 5 setup below; warm, it only
# checks its cache.
phase "control plane: build in the background (log: target/control-plane-build.log)"
cp_start=$(date +%s)
# Kueue (issue 13's scenarios) after it, in the same background job: two Go builds at
# once on 2 cores would only slow the Rust build more.
(testenv/build-control-plane.sh > target/control-plane.env && testenv/build-kueue.sh > target/kueue.env) 2> target/control-plane-build.log &
cp_pid=$!
# A failed step below must not leave the build running.
stop_background() { kill "$cp_pid" 2>/dev/null || true; }
trap stop_background EXIT

phase "build"
start=$(date +%s)
# Every cargo command of this script passes the same `--features batch-autoscaler/cloud`
# (the binary's Kubernetes and AWS adapters, off by default so that the README's first
# command compiles quickly): the same features resolve the same way, so nothing is
# compiled twice, and target/debug/batch-autoscaler, which tier 5 runs, is always the
# whole binary.
cargo build --workspace --all-targets --features batch-autoscaler/cloud
echo "build took $(( $(date +%s) - start ))s"

# ---- BEGIN tier 4 setup (owned by crates/aws): moto server for the AWS adapter ----
# Creates or reuses the moto venv (cached under $HOME/.cache/batch-autoscaler/),
# starts crates/aws/moto/launcher.py on 127.0.0.1 and a free port, and exports
# BATCH_AUTOSCALER_MOTO_URL for the aws crate's tests (which fail, not skip, in CI
# without it). The server is stopped when this script exits.
phase "tier 4 setup: moto server"
moto_python="$(crates/aws/moto/ensure-venv.sh)"
moto_url_file="target/moto-server.url"
moto_log="target/moto-server.log"
rm -f "$moto_url_file"
"$moto_python" crates/aws/moto/launcher.py > "$moto_url_file" 2> "$moto_log" &
moto_pid=$!
stop_moto() { kill "$moto_pid" 2>/dev/null || true; wait "$moto_pid" 2>/dev/null || true; }
trap 'stop_moto; stop_background' EXIT
for _ in $(seq 1 300); do
    [ -s "$moto_url_file" ] && [ "$(wc -l < "$moto_url_file")" -ge 1 ] && break
    kill -0 "$moto_pid" 2>/dev/null || { echo "moto server exited:" >&2; cat "$moto_log" >&2; exit 1; }
    sleep 0.1
done
BATCH_AUTOSCALER_MOTO_URL="$(head -n 1 "$moto_url_file")"
[ -n "$BATCH_AUTOSCALER_MOTO_URL" ] || { echo "moto server did not start within 30s:" >&2; cat "$moto_log" >&2; exit 1; }
export BATCH_AUTOSCALER_MOTO_URL
echo "moto server at $BATCH_AUTOSCALER_MOTO_URL (log: $moto_log)"
# ---- END tier 4 setup ----

# ---- BEGIN shipping (owned by issue 6: deploy/, Dockerfile, deny.toml, crates/shipping) ----
# helm and cargo-deny are installed once (niced) and cached by version under
# ${BATCH_AUTOSCALER_CACHE:-$HOME/.cache/batch-autoscaler}/bin/ by
# scripts/check-shipping.sh; HELM is exported for crates/shipping's tests in the
# workspace run below (with CI=1 they fail without it).
phase "shipping: helm lint + template (defaults, every option), manifests in sync"
shipping_start=$(date +%s)
HELM="$(scripts/check-shipping.sh ensure-helm)"
export HELM
scripts/check-shipping.sh helm
phase "shipping: cargo deny (licenses, bans, sources offline; advisories if the DB is local)"
scripts/check-shipping.sh deny
phase "shipping: static binary, built as the Dockerfile builds it"
scripts/check-shipping.sh static
echo "shipping checks took $(( $(date +%s) - shipping_start ))s"
# ---- END shipping ----

# ---- BEGIN tier 5 setup (owned by crates/e2e): a real control plane for the end-to-end tests ----
# Builds etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubectl and
# KWOK from Go modules (testenv/build-control-plane.sh: cached by version under
# ${BATCH_AUTOSCALER_CACHE:-$HOME/.cache/batch-autoscaler}/bin/, ~18 min cold on 2
# cores, under a second warm), then exports BATCH_AUTOSCALER_E2E=1 and the binary the
# build step made, so crates/e2e's scenarios run inside the workspace run below: one
# control plane and one moto server for the test binary, the autoscaler as deployed
# (the ServiceAccount and roles of deploy/manifests/batch-autoscaler.yaml). With BATCH_AUTOSCALER_E2E=1 (and
# CI=1) a scenario that cannot run fails, it never skips. Each scenario prints
# "e2e TIME scenario <name>: passed|FAILED in <s>" and the suite's time so far.
phase "tier 5 setup: control plane for the end-to-end tests"
if ! wait "$cp_pid"; then
    cat target/control-plane-build.log >&2
    echo "tier 5: testenv/build-control-plane.sh or testenv/build-kueue.sh failed (log above)" >&2
    exit 1
fi
grep -E 'TIME|already built' target/control-plane-build.log || true
echo "control-plane build finished $(( $(date +%s) - cp_start ))s after it started (in the background)"
export BATCH_AUTOSCALER_E2E=1
case "${CARGO_TARGET_DIR:-target}" in
    /*) BATCH_AUTOSCALER_BIN="${CARGO_TARGET_DIR}/debug/batch-autoscaler" ;;
    *) BATCH_AUTOSCALER_BIN="$PWD/${CARGO_TARGET_DIR:-target}/debug/batch-autoscaler" ;;
esac
test -x "$BATCH_AUTOSCALER_BIN" || { echo "tier 5: $BATCH_AUTOSCALER_BIN was not built" >&2; exit 1; }
export BATCH_AUTOSCALER_BIN
# ---- END tier 5 setup ----

phase "tiers 1-4: cargo test --workspace --features batch-autoscaler/cloud"
# CI=1: a test whose environment is missing (moto, the control plane) fails instead of
# skipping. One workspace run: `cargo test -p <crate>` would resolve features anew and
# recompile the dependency tree.
start=$(date +%s)
CI=1 cargo test --workspace --features batch-autoscaler/cloud 2>&1 | tee target/test-output.log
echo "tests took $(( $(date +%s) - start ))s"
# Tier 5 ran, every scenario of it: CI=1 turns a skip into a failure, and this counts
# the scenarios that reported a pass, so a scenario filtered away or never reached is
# caught too.
e2e_expected=$(cat crates/e2e/tests/scenarios.rs crates/e2e/tests/scenarios/*.rs crates/e2e/tests/replay.rs | grep -c '^#\[test\]' || true)
e2e_passed=$(grep -c '^e2e TIME scenario .*: passed' target/test-output.log || true)
echo "tier 5: $e2e_passed of $e2e_expected end-to-end scenarios passed"
[ "$e2e_passed" -eq "$e2e_expected" ] || { echo "tier 5: expected $e2e_expected end-to-end scenarios to pass, saw $e2e_passed" >&2; exit 1; }

phase "README quick-start command, as written (no cloud feature)"
# The README's first command exactly as a new user types it: `cargo run -p
# batch-autoscaler` without features builds `simulate` and `bench` only (the planner
# and the simulator: minutes cold, not the Kubernetes and AWS stack), then the binary's
# own tests without the feature: `run` and `explain` say how to build them. This
# resolves features anew, so it compiles the simulator's small dependency tree once
# more (a no-op when warm), and it leaves that smaller binary in target/debug/, which
# the bench smoke below runs too; the last step puts the whole binary back.
start=$(date +%s)
cargo run -p batch-autoscaler -- simulate examples/cpu-burst.yaml --report target/readme-check.json --plot target/readme-check.svg > /dev/null
test -s target/readme-check.json
test -s target/readme-check.svg
cargo test -p batch-autoscaler
echo "README command and the feature-less binary's tests took $(( $(date +%s) - start ))s"

phase "bench smoke: batch-autoscaler bench at a small size"
# Checks the harness runs and prints its keys; the figures are in the README (issue 7).
bench_json=$(target/debug/batch-autoscaler bench --nodes 200 --pending-pods 2000 --groups 10 --runs 2 --json)
for key in '"scale_up_plan_ms":{"median":' '"scale_down_pass_ms":{"median":' '"p95":' '"peak_rss_mb":'; do
    case "$bench_json" in *"$key"*) ;; *) echo "bench smoke: missing $key in $bench_json" >&2; exit 1 ;; esac
done
echo "$bench_json"

phase "the whole binary back in target/debug/"
# The build step's very command, so nothing compiles (`--all-targets` too: dev-dependencies
# change the features of shared crates): cargo links the binary it made back to
# target/debug/batch-autoscaler, which crates/shipping's tests and a hand-run of the
# end-to-end tests use.
cargo build --workspace --all-targets --features batch-autoscaler/cloud
version=$(target/debug/batch-autoscaler --version)
case "$version" in
    *"without the cloud feature"*) echo "target/debug/batch-autoscaler is still the feature-less build: $version" >&2; exit 1 ;;
esac
echo "$version"
