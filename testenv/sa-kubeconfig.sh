#!/usr/bin/env bash
# Write a kubeconfig for a ServiceAccount of the control plane in DIR, with a
# token minted by the TokenRequest API (as a pod's projected token would be).
# This is how the autoscaler runs "as deployed": its RBAC comes from the
# shipped manifests, and the apiserver enforces it.
#
# Usage: testenv/sa-kubeconfig.sh DIR NAMESPACE SERVICEACCOUNT OUT [DURATION]
#   DURATION defaults to 24h. The ServiceAccount must exist.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.env
. "$here/versions.env"
# shellcheck source=lib.sh
. "$here/lib.sh"

[[ $# -ge 4 ]] || { echo "usage: $0 DIR NAMESPACE SERVICEACCOUNT OUT [DURATION]" >&2; exit 2; }
DIR="$(cd "$1" && pwd)"; ns="$2"; sa="$3"; out="$4"; duration="${5:-24h}"
# shellcheck disable=SC1091
. "$DIR/env"
CACHE="${BATCH_AUTOSCALER_CACHE:-$HOME/.cache/batch-autoscaler}"
KUBECTL="${KUBECTL:-$CACHE/bin/k8s-$K8S_VERSION/kubectl}"
token="$("$KUBECTL" --kubeconfig "$DIR/admin.kubeconfig" -n "$ns" create token "$sa" --duration="$duration")" \
  || cp_die "TokenRequest for $ns/$sa failed"
umask 077
cat > "$out" <<EOK
apiVersion: v1
kind: Config
clusters:
- name: batch-autoscaler-test
  cluster:
    server: $KUBE_API_URL
    certificate-authority: $KUBE_CA_FILE
users:
- name: system:serviceaccount:$ns:$sa
  user:
    token: $token
contexts:
- name: $sa@batch-autoscaler-test
  context:
    cluster: batch-autoscaler-test
    user: system:serviceaccount:$ns:$sa
    namespace: $ns
current-context: $sa@batch-autoscaler-test
EOK
