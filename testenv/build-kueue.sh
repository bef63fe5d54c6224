#!/usr/bin/env bash
# Build (once, cached by version) Kueue's manager from sigs.k8s.io/kueue and gather the
# CRDs the Kueue scenarios need: Kueue's own, and the ProvisioningRequest CRD from
# k8s.io/autoscaler/cluster-autoscaler/apis. Only Go and the Go module proxy are needed.
#
# Usage: testenv/build-kueue.sh     (stdout: KEY=VALUE lines; progress on stderr)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.env
. "$here/versions.env"

RECIPE=1
CACHE="${BATCH_AUTOSCALER_CACHE:-$HOME/.cache/batch-autoscaler}"
NICE="${BUILD_NICE:-19}"
OUT="$CACHE/bin/kueue-$KUEUE_VERSION"
WORK="$CACHE/work"

log() { printf '[build-kueue] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

command -v go >/dev/null || die "go is not on PATH"
mkdir -p "$CACHE/bin" "$WORK"
exec 9>"$CACHE/.build-kueue.lock"
if command -v flock >/dev/null; then flock 9; fi

key="kueue $KUEUE_VERSION ca-apis $CA_APIS_VERSION recipe $RECIPE"
if [[ -f "$OUT/.stamp" && "$(cat "$OUT/.stamp")" == "$key" && -x "$OUT/kueue" ]]; then
  log "kueue $KUEUE_VERSION already built in $OUT"
else
  start=$(date +%s)
  tmp="$OUT.tmp"
  rm -rf "$tmp"; mkdir -p "$tmp/crds"
  export CGO_ENABLED=0
  # go install pkg@version builds with the module's own go.mod (it has no replace
  # directives), exactly as its release does.
  (cd "$WORK" && GOBIN="$tmp" GOFLAGS="" nice -n "$NICE" \
    go install -trimpath -ldflags "-s -w" "sigs.k8s.io/kueue/cmd/kueue@$KUEUE_VERSION") \
    || die "go install kueue $KUEUE_VERSION failed"
  log "TIME go install kueue $KUEUE_VERSION: $(( $(date +%s) - start ))s"
  kdir="$(cd "$WORK" && go mod download -json "sigs.k8s.io/kueue@$KUEUE_VERSION" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
  adir="$(cd "$WORK" && go mod download -json "k8s.io/autoscaler/cluster-autoscaler/apis@$CA_APIS_VERSION" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
  [[ -d "$kdir/config/components/crd/bases" ]] || die "no CRDs in $kdir"
  [[ -f "$adir/config/crd/autoscaling.x-k8s.io_provisioningrequests.yaml" ]] || die "no ProvisioningRequest CRD in $adir"
  cp "$kdir"/config/components/crd/bases/*.yaml "$tmp/crds/"
  cp "$adir/config/crd/autoscaling.x-k8s.io_provisioningrequests.yaml" "$tmp/crds/"
  cp "$kdir/config/components/webhook/manifests.yaml" "$tmp/webhooks.yaml"
  chmod -R u+w "$tmp"
  echo "$key" > "$tmp/.stamp"
  rm -rf "$OUT"; mv "$tmp" "$OUT"
  log "TIME kueue total: $(( $(date +%s) - start ))s"
fi

cat <<EOT
KUEUE_VERSION=$KUEUE_VERSION
KUEUE_BIN=$OUT/kueue
KUEUE_CRDS=$OUT/crds
KUEUE_WEBHOOKS=$OUT/webhooks.yaml
EOT
