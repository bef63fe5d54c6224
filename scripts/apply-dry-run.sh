#!/usr/bin/env bash
# Applies the committed plain manifests (deploy/manifests/*.yaml) to a real apiserver
# with a server-side dry run: the apiserver validates every object (schema, strict
# field validation, admission — the PriorityClass must exist, RBAC escalation checks)
# and persists nothing.
#
# Usage: scripts/apply-dry-run.sh KUBECONFIG
# kubectl: $KUBECTL, else kubectl on PATH, else the one testenv/build-control-plane.sh built.
set -euo pipefail
cd "$(dirname "$0")/.."

kubeconfig="${1:?usage: $0 KUBECONFIG}"
[[ -r "$kubeconfig" ]] || { echo "cannot read kubeconfig $kubeconfig" >&2; exit 2; }

kubectl="${KUBECTL:-}"
if [[ -z "$kubectl" ]]; then
    if command -v kubectl >/dev/null; then
        kubectl=kubectl
    else
        # shellcheck source=testenv/versions.env disable=SC1091
        . testenv/versions.env
        kubectl="${BATCH_AUTOSCALER_CACHE:-$HOME/.cache/batch-autoscaler}/bin/k8s-$K8S_VERSION/kubectl"
        [[ -x "$kubectl" ]] || { echo "kubectl not found (set KUBECTL)" >&2; exit 2; }
    fi
fi

status=0
for f in deploy/manifests/*.yaml; do
    echo "--- $f" >&2
    "$kubectl" --kubeconfig "$kubeconfig" apply --server-side --dry-run=server --validate=strict \
        --field-manager=batch-autoscaler-dry-run -f "$f" || status=1
done
exit "$status"
