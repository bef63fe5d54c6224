#!/usr/bin/env bash
# Packaging checks (issue 6) and the tools they need, installed once and cached by
# version under ${BATCH_AUTOSCALER_CACHE:-$HOME/.cache/batch-autoscaler}/bin/.
#
# Usage: scripts/check-shipping.sh COMMAND...
#   ensure-helm        install helm (go install, niced) if missing; print its path
#   ensure-cargo-deny  install cargo-deny (cargo install, niced) if missing; print its path
#   helm               helm lint + helm template, with the defaults and with
#                      deploy/helm/ci/full-values.yaml (every option set); the
#                      committed deploy/manifests/ must equal a fresh render
#   deny               cargo deny: licenses, bans (duplicate versions warn) and
#                      sources offline; advisories too when the advisory DB can be
#                      fetched (skipped with a notice when it cannot)
#   static             build the release binary for $STATIC_TARGET exactly as the
#                      Dockerfile does and check that it is statically linked and
#                      prints its version and git commit
#   all                all of the above
#
# Environment:
#   BATCH_AUTOSCALER_CACHE   cache root (default $HOME/.cache/batch-autoscaler)
#   BUILD_NICE               nice level for tool installs (default 10)
#   BATCH_AUTOSCALER_ADVISORIES=skip|fetch   skip or require the advisory DB (default:
#                            try it, skip with a notice when offline)
set -euo pipefail
cd "$(dirname "$0")/.."

HELM_VERSION=v3.22.0
CARGO_DENY_VERSION=0.20.2
# The Dockerfile uses the same target and flags (see the comment there).
STATIC_TARGET=x86_64-unknown-linux-musl

CACHE="${BATCH_AUTOSCALER_CACHE:-$HOME/.cache/batch-autoscaler}"
BIN="$CACHE/bin"
NICE="${BUILD_NICE:-10}"

log() { printf '[check-shipping] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# One tool install at a time per cache (a person and a test run may race).
with_lock() {
    mkdir -p "$BIN"
    exec 8>"$CACHE/.tools.lock"
    if command -v flock >/dev/null; then flock 8; fi
}

ensure_helm() {
    local dir="$BIN/helm-$HELM_VERSION"
    if [[ -x "$dir/helm" ]]; then echo "$dir/helm"; return; fi
    command -v go >/dev/null || die "go is not on PATH (needed to build helm)"
    with_lock
    if [[ ! -x "$dir/helm" ]]; then
        local tmp="$dir.tmp" start
        rm -rf "$tmp"; mkdir -p "$tmp"
        start=$(date +%s)
        log "installing helm $HELM_VERSION (go install, nice $NICE)"
        (cd "$tmp" && CGO_ENABLED=0 GOFLAGS="" GOBIN="$tmp" nice -n "$NICE" \
            go install -trimpath \
            -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION" \
            "helm.sh/helm/v3/cmd/helm@$HELM_VERSION") >&2
        "$tmp/helm" version --short >&2 || die "the helm just built does not run"
        rm -rf "$dir"; mv "$tmp" "$dir"
        log "helm $HELM_VERSION installed in $(( $(date +%s) - start ))s"
    fi
    echo "$dir/helm"
}

ensure_cargo_deny() {
    local dir="$BIN/cargo-deny-$CARGO_DENY_VERSION"
    if [[ -x "$dir/bin/cargo-deny" ]]; then echo "$dir/bin/cargo-deny"; return; fi
    with_lock
    if [[ ! -x "$dir/bin/cargo-deny" ]]; then
        local tmp="$dir.tmp" start
        rm -rf "$tmp"
        start=$(date +%s)
        log "installing cargo-deny $CARGO_DENY_VERSION (cargo install, nice $NICE)"
        # Its release profile is fat LTO with one codegen unit: far slower to build
        # than it is worth for a tool that runs for a second. Its own target dir, so
        # it neither waits for nor invalidates the workspace build.
        CARGO_PROFILE_RELEASE_LTO=off CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 \
        CARGO_PROFILE_RELEASE_OPT_LEVEL=1 CARGO_TARGET_DIR="$CACHE/tmp-build/cargo-deny-target" \
            nice -n "$NICE" cargo install --locked --root "$tmp" cargo-deny --version "$CARGO_DENY_VERSION" >&2
        "$tmp/bin/cargo-deny" --version >&2 || die "the cargo-deny just built does not run"
        rm -rf "$dir"; mv "$tmp" "$dir"
        rm -rf "$CACHE/tmp-build/cargo-deny-target"
        log "cargo-deny $CARGO_DENY_VERSION installed in $(( $(date +%s) - start ))s"
    fi
    echo "$dir/bin/cargo-deny"
}

# The static build, shared with the Dockerfile: the check below insists the Dockerfile
# runs exactly this command.
STATIC_BUILD="cargo build --release --locked --target $STATIC_TARGET -p batch-autoscaler --features cloud"

check_helm() {
    local helm chart=deploy/helm/batch-autoscaler full=deploy/helm/batch-autoscaler/ci/full-values.yaml out
    helm="$(ensure_helm)"
    out="$(mktemp -d)"
    log "helm lint (defaults, and every option set)"
    "$helm" lint --strict "$chart"
    "$helm" lint --strict "$chart" -f "$full"
    log "helm template (defaults, and every option set)"
    "$helm" template batch-autoscaler "$chart" --namespace kube-system > "$out/default.yaml"
    "$helm" template rel "$chart" --namespace batch-system -f "$full" > "$out/full.yaml"
    log "rendered $(grep -c '^kind:' "$out/default.yaml") objects with the defaults, $(grep -c '^kind:' "$out/full.yaml") with every option"
    rm -rf "$out"
    log "deploy/manifests in sync with the chart"
    HELM="$helm" scripts/render-manifests.sh --check
}

check_deny() {
    local deny db
    deny="$(ensure_cargo_deny)"
    # cargo metadata needs every crate of Cargo.lock, for every platform: fetch them
    # from the registry (a no-op when cached) so the check itself can run offline.
    cargo fetch --locked >&2 || log "cargo fetch failed: checking with what is cached"
    log "cargo deny: licenses, bans (duplicates warn), sources (offline)"
    "$deny" --offline check --hide-inclusion-graph licenses bans sources
    db="${CARGO_HOME:-$HOME/.cargo}/advisory-dbs"
    case "${BATCH_AUTOSCALER_ADVISORIES:-auto}" in
        fetch)
            log "cargo deny: advisories (fetching the RustSec database)"
            "$deny" check --hide-inclusion-graph advisories ;;
        skip)
            echo "SKIPPED cargo deny advisories: BATCH_AUTOSCALER_ADVISORIES=skip" ;;
        *)
            if [[ -d "$db" ]] && [[ -n "$(ls -A "$db" 2>/dev/null)" ]]; then
                log "cargo deny: advisories (local database in $db, not refreshed)"
                "$deny" check --hide-inclusion-graph --disable-fetch advisories
            else
                echo "SKIPPED cargo deny advisories: no local RustSec database (offline); BATCH_AUTOSCALER_ADVISORIES=fetch fetches it"
            fi ;;
    esac
}

check_static() {
    local bin="target/$STATIC_TARGET/release/batch-autoscaler" commit start version
    grep -qF "RUN $STATIC_BUILD" Dockerfile || grep -qF "$STATIC_BUILD" Dockerfile \
        || die "the Dockerfile does not build with: $STATIC_BUILD"
    # Output captured first, never piped into `grep -q`: grep exits at the first match,
    # the writer can die of SIGPIPE, and with pipefail the test reads as false.
    local installed elf_headers elf_dynamic
    installed="$(rustup target list --installed 2>/dev/null || true)"
    if ! grep -qx "$STATIC_TARGET" <<< "$installed"; then
        log "adding the $STATIC_TARGET target"
        rustup target add "$STATIC_TARGET" >&2 || die "cannot add the $STATIC_TARGET target (rustup)"
    fi
    # The Dockerfile installs Debian's musl-tools too: musl-gcc compiles ring's C.
    if ! command -v musl-gcc >/dev/null; then
        log "installing musl-tools (Debian) for musl-gcc"
        { apt-get install -y --no-install-recommends musl-tools >&2 \
            || { apt-get update >&2 && apt-get install -y --no-install-recommends musl-tools >&2; }; } \
            || die "musl-gcc is missing and musl-tools could not be installed"
    fi
    commit="$(git rev-parse HEAD 2>/dev/null || echo unknown)"
    start=$(date +%s)
    log "$STATIC_BUILD (BATCH_AUTOSCALER_GIT_COMMIT=$commit)"
    BATCH_AUTOSCALER_GIT_COMMIT="$commit" $STATIC_BUILD >&2
    log "static build took $(( $(date +%s) - start ))s"
    # Statically linked: no program interpreter and no shared-library dependencies.
    elf_headers="$(readelf -lW "$bin")"
    elf_dynamic="$(readelf -dW "$bin")"
    if grep -q 'INTERP' <<< "$elf_headers"; then die "$bin has a program interpreter (dynamically linked)"; fi
    if grep -q '(NEEDED)' <<< "$elf_dynamic"; then die "$bin needs shared libraries: $(grep NEEDED <<< "$elf_dynamic")"; fi
    # Exactly this: a build without the cloud feature (no `run`) would add so here.
    version="$("$bin" --version)"
    [[ "$version" == "batch-autoscaler $(cargo_version) (commit $commit)" ]] \
        || die "unexpected --version output: $version"
    log "$bin: statically linked, $(du -h "$bin" | cut -f1), '$version'"
}

cargo_version() {
    sed -n '/^\[workspace.package\]/,/^\[/s/^version = "\(.*\)"/\1/p' Cargo.toml
}

for cmd in "$@"; do
    case "$cmd" in
        ensure-helm) ensure_helm ;;
        ensure-cargo-deny) ensure_cargo_deny ;;
        helm) check_helm ;;
        deny) check_deny ;;
        static) check_static ;;
        all) check_helm; check_deny; check_static ;;
        *) die "unknown command $cmd (see the header of $0)" ;;
    esac
done
