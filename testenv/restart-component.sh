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
# The component's port can still be held for a moment by a client socket of the old
# process's peers; a component that exits at once because its port is in use is
# launched again (a bounded number of times), never reported as a crash.
for attempt in $(seq 1 20); do
  log="$DIR/logs/$name.log"
  log_size_before=$(stat -c %s "$log" 2>/dev/null || echo 0)
  cp_launch "$DIR" "$name"
  # Wait until the component is past binding its ports (it logs that it serves) or
  # has exited.
  bind_deadline=$(( $(date +%s) + 10 ))
  while cp_alive "$DIR" "$name" && (( $(date +%s) < bind_deadline )); do
    tail -c +"$(( log_size_before + 1 ))" "$log" 2>/dev/null | grep -qiE 'serving securely|serving client|listening on' && break
    sleep 0.1
  done
  if ! cp_alive "$DIR" "$name" && tail -c +"$(( log_size_before + 1 ))" "$log" 2>/dev/null | grep -q 'address already in use'; then
    cp_log "$name could not bind its port (attempt $attempt); launching again"
    sleep 0.5
    continue
  fi
  break
done
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
