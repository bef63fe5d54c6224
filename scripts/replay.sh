#!/usr/bin/env bash
# Replays a simulator scenario on the real stack (issue 14):
#
#   scripts/replay.sh SCENARIO.yaml [--speedup N] [--report out.json] [--seed S]
#                     [--autoscaler-command CMD]
#
# A real control plane (etcd, kube-apiserver, scheduler, controller-manager), KWOK as
# the kubelets, the patched moto server as AWS, the cloud bridge (each group's boot
# delay) and the autoscaler binary as a separate process, with every duration of the
# scenario and of the autoscaler's settings divided by N (default 30). The report has
# the keys of `batch-autoscaler simulate --report`, in scenario time, and the simulator's
# figures for the same scenario are printed next to it (crates/e2e/src/replay.rs).
#
# --autoscaler-command CMD runs CMD (with sh -c, in a process group of its own: at the
# end, on a failure, or after the replay is killed, the whole group is stopped, so
# whatever CMD starts in its turn goes with it) instead of batch-autoscaler, with
# KUBECONFIG, AWS_ENDPOINT_URL, AWS_REGION, AWS_REGIONS, AWS_ACCESS_KEY_ID,
# AWS_SECRET_ACCESS_KEY, CLUSTER_NAME, REPLAY_SPEEDUP and REPLAY_SETTINGS (the scaled
# settings as YAML) in its environment. The ASGs carry Cluster Autoscaler's tags
# (k8s.io/cluster-autoscaler/enabled, k8s.io/cluster-autoscaler/<cluster>) and the
# seed's (KubernetesCluster, Role); nodes have spec.providerID aws:///<zone>/<id>.
#
# The control plane is built once and cached (testenv/build-control-plane.sh, ~18 min
# cold); the moto venv likewise. Logs: the directory the run prints (kept on failure,
# or with KEEP_E2E_DIR=1).
set -euo pipefail
cd "$(dirname "$0")/.."

case "${1:-}" in
    ""|-h|--help) sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac

# Scenario and report paths are taken relative to the caller's directory.
args=()
for a in "$@"; do
    if [ -e "$OLDPWD/$a" ] && [ "${a#/}" = "$a" ]; then args+=("$OLDPWD/$a"); else args+=("$a"); fi
done
# --report's value: relative to the caller too.
for i in "${!args[@]}"; do
    if [ "${args[$i]}" = "--report" ] && [ -n "${args[$((i + 1))]:-}" ]; then
        r="${args[$((i + 1))]}"
        [ "${r#/}" = "$r" ] && args[$((i + 1))]="$OLDPWD/$r"
    fi
done

target="${CARGO_TARGET_DIR:-target}"
case "$target" in /*) ;; *) target="$PWD/$target" ;; esac
mkdir -p "$target"

echo "replay: control plane (cached after the first build)" >&2
testenv/build-control-plane.sh > "$target/control-plane.env"

features=()
# The `run` subcommand may need the binary's cloud feature.
if grep -qE '^\s*cloud\s*=' crates/cli/Cargo.toml; then features=(--features cloud); fi
echo "replay: building batch-autoscaler and the replay binary" >&2
cargo build --quiet -p batch-autoscaler "${features[@]}"
cargo build --quiet -p e2e --bin replay

export BATCH_AUTOSCALER_BIN="$target/debug/batch-autoscaler"
export BATCH_AUTOSCALER_E2E=1
exec "$target/debug/replay" "${args[@]}"
