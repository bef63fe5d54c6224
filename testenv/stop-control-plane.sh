#!/usr/bin/env bash
# Stop the control plane started by start-control-plane.sh in DIR (reverse
# start order; SIGTERM then SIGKILL). Idempotent; DIR itself is kept (logs).
#
# Usage: testenv/stop-control-plane.sh DIR [component...]
#   With components (etcd kube-apiserver kube-controller-manager
#   kube-scheduler kwok) only those are stopped; DIR/run/<component>.sh
#   restarts one (see testenv/restart-component.sh).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=lib.sh
. "$here/lib.sh"

[[ $# -ge 1 ]] || { echo "usage: $0 DIR [component...]" >&2; exit 2; }
[[ -d "$1" ]] || exit 0
DIR="$(cd "$1" && pwd)"
shift
if [[ $# -gt 0 ]]; then
  comps=("$@")
else
  comps=()
  for (( i = ${#CP_COMPONENTS[@]} - 1; i >= 0; i-- )); do comps+=("${CP_COMPONENTS[i]}"); done
fi
for c in "${comps[@]}"; do cp_stop "$DIR" "$c"; done
