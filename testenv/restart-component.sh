#!/usr/bin/env bash
# Restart one component of a running control plane in DIR with the same
# command line (e.g. the apiserver, for fault tests). Waits for the
# apiserver's /readyz when restarting the apiserver or etcd.
#
# Usage: testenv/restart-component.sh DIR COMPONENT [--kill]
#   --kill  SIGKILL instead of a graceful stop
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=lib.sh
. "$here/lib.sh"

[[ $# -ge 2 ]] || { echo "usage: $0 DIR COMPONENT [--kill]" >&2; exit 2; }
DIR="$(cd "$1" && pwd)"
name="$2"
[[ -x "$DIR/run/$name.sh" ]] || cp_die "no component $name in $DIR"
if [[ "${3:-}" == "--kill" ]]; then
  cp_stop "$DIR" "$name" 0
else
  cp_stop "$DIR" "$name"
fi
cp_launch "$DIR" "$name"
if [[ "$name" == kube-apiserver || "$name" == etcd ]]; then
  # shellcheck disable=SC1091
  . "$DIR/env"
  deadline=$(( $(date +%s) + ${CONTROL_PLANE_TIMEOUT:-180} ))
  until curl -fsS --cacert "$KUBE_CA_FILE" -H "Authorization: Bearer $KUBE_ADMIN_TOKEN" \
      "$KUBE_API_URL/readyz" >/dev/null 2>&1; do
    cp_alive "$DIR" "$name" || { cp_dump_logs "$DIR"; cp_die "$name exited after restart"; }
    (( $(date +%s) < deadline )) || { cp_dump_logs "$DIR"; cp_die "apiserver not ready after restart"; }
    sleep 0.2
  done
  cp_log "kube-apiserver ready after restart of $name"
fi
