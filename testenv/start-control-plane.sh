#!/usr/bin/env bash
# Start a throwaway control plane in DIR: etcd, kube-apiserver (TLS, static
# tokens, Node,RBAC), kube-controller-manager, kube-scheduler and kwok, all on
# 127.0.0.1 with free ports, as the current user. Returns once the apiserver
# is ready, the controller-manager and scheduler are healthy and the
# `default` ServiceAccount exists (the ServiceAccount controller works).
#
# Usage: testenv/start-control-plane.sh DIR
#   Binaries must already be built (testenv/build-control-plane.sh).
#
# Layout of DIR afterwards:
#   env                       KEY=VALUE lines (also printed on stdout)
#   admin.kubeconfig          system:masters identity
#   autoscaler.kubeconfig     user batch-autoscaler-test, no RBAC bindings
#   pki/                      ca.crt, apiserver.{crt,key}, sa.{key,pub}, tokens.csv
#   logs/<component>.log      component logs (appended across restarts)
#   run/<component>.sh        the exact command line; re-run it to restart
#   run/<component>.pid       pid of the running component
#   etcd/                     etcd data
#
# Environment:
#   BATCH_AUTOSCALER_CACHE      cache root (default $HOME/.cache/batch-autoscaler)
#   KUBE_APISERVER, KUBE_CONTROLLER_MANAGER, KUBE_SCHEDULER, ETCD_BIN, KWOK_BIN
#                               override a binary's path
#   KWOK_STAGES                 Stage documents (default testenv/kwok/stages.yaml)
#   CONTROL_PLANE_TIMEOUT       seconds to wait for readiness (default 180)
#   CONTROL_PLANE_LOG_VERBOSITY klog -v for kube components (default 2)
#   KUBE_SCHEDULER_POD_MAX_BACKOFF_SECONDS
#                               the scheduler's podMaxBackoffSeconds (and
#                               podInitialBackoffSeconds 1) through a config file;
#                               unset: Kubernetes' defaults (1 s doubling to 10 s).
#                               The replay (crates/e2e/src/replay.rs) sets 1: at a
#                               speed-up of N an unscaled 10 s backoff would cost
#                               N × 10 s of scenario time.
#   KUBE_CONTROL_PLANE_QPS      client QPS (burst: twice) of the controller-manager
#                               and the scheduler; unset: Kubernetes' defaults
#                               (20/30 and 50/100). The replay sets 1000: at 20 QPS
#                               the Job controller takes 10 s to create 200 pods,
#                               which a speed-up of N makes N × 10 s.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.env
. "$here/versions.env"
# shellcheck source=lib.sh
. "$here/lib.sh"

[[ $# -eq 1 ]] || { echo "usage: $0 DIR" >&2; exit 2; }
mkdir -p "$1"
DIR="$(cd "$1" && pwd)"

CACHE="${BATCH_AUTOSCALER_CACHE:-$HOME/.cache/batch-autoscaler}"
KUBE_APISERVER="${KUBE_APISERVER:-$CACHE/bin/k8s-$K8S_VERSION/kube-apiserver}"
KUBE_CONTROLLER_MANAGER="${KUBE_CONTROLLER_MANAGER:-$CACHE/bin/k8s-$K8S_VERSION/kube-controller-manager}"
KUBE_SCHEDULER="${KUBE_SCHEDULER:-$CACHE/bin/k8s-$K8S_VERSION/kube-scheduler}"
ETCD_BIN="${ETCD_BIN:-$CACHE/bin/etcd-$ETCD_VERSION/etcd}"
KWOK_BIN="${KWOK_BIN:-$CACHE/bin/kwok-$KWOK_VERSION/kwok}"
KWOK_STAGES="${KWOK_STAGES:-$here/kwok/stages.yaml}"
TIMEOUT="${CONTROL_PLANE_TIMEOUT:-180}"
V="${CONTROL_PLANE_LOG_VERBOSITY:-2}"

for b in "$KUBE_APISERVER" "$KUBE_CONTROLLER_MANAGER" "$KUBE_SCHEDULER" "$ETCD_BIN" "$KWOK_BIN"; do
  [[ -x "$b" ]] || cp_die "missing binary $b: run testenv/build-control-plane.sh first"
done
command -v openssl >/dev/null || cp_die "openssl is required"
command -v curl >/dev/null || cp_die "curl is required"

for c in "${CP_COMPONENTS[@]}"; do
  if cp_alive "$DIR" "$c"; then cp_die "$c is already running for $DIR (stop it first)"; fi
done

mkdir -p "$DIR/pki" "$DIR/logs" "$DIR/run" "$DIR/etcd" "$DIR/kwok-home"
PKI="$DIR/pki"

# ---------------------------------------------------------------- ports
declare -A taken=()
# Ports are chosen below the kernel's ephemeral range: a port in that range that is
# free now can be taken, before the component binds it, as the source port of any
# outgoing connection (seen in CI: the scheduler's port went to a client socket).
ephemeral_low=$(awk '{print $1}' /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
[[ "$ephemeral_low" =~ ^[0-9]+$ && "$ephemeral_low" -gt 12000 ]] || ephemeral_low=32768
free_port() {
  local p i
  for i in $(seq 1 200); do
    p=$(( 10000 + (RANDOM * 32768 + RANDOM) % (ephemeral_low - 10000) ))
    [[ -z "${taken[$p]:-}" ]] || continue
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
      taken[$p]=1
      echo "$p"
      return
    fi
  done
  cp_die "no free port found"
}
ETCD_PORT=$(free_port)
ETCD_PEER_PORT=$(free_port)
API_PORT=$(free_port)
KCM_PORT=$(free_port)
SCHED_PORT=$(free_port)
KWOK_PORT=$(free_port)
API_URL="https://127.0.0.1:$API_PORT"

# ---------------------------------------------------------------- PKI
if [[ ! -f "$PKI/ca.crt" ]]; then
  cp_log "creating CA, serving certificate and service-account keys in $PKI"
  openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -sha256 \
    -keyout "$PKI/ca.key" -out "$PKI/ca.crt" \
    -subj "/CN=batch-autoscaler-test-ca" 2>/dev/null
  cat > "$PKI/apiserver.ext" <<'EOF'
basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=IP:127.0.0.1,IP:10.96.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local
EOF
  openssl req -newkey rsa:2048 -nodes -sha256 \
    -keyout "$PKI/apiserver.key" -out "$PKI/apiserver.csr" \
    -subj "/CN=kube-apiserver" 2>/dev/null
  openssl x509 -req -in "$PKI/apiserver.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" \
    -CAcreateserial -days 3650 -sha256 -extfile "$PKI/apiserver.ext" \
    -out "$PKI/apiserver.crt" 2>/dev/null
  openssl genrsa -out "$PKI/sa.key" 2048 2>/dev/null
  openssl rsa -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub" 2>/dev/null
  chmod 600 "$PKI"/*.key
fi

# Static bearer tokens: token,user,uid,"groups".
if [[ ! -f "$PKI/tokens.csv" ]]; then
  tok() { openssl rand -hex 24; }
  ADMIN_TOKEN=$(tok)
  {
    echo "$ADMIN_TOKEN,admin,admin,\"system:masters\""
    echo "$(tok),system:kube-controller-manager,kcm"
    echo "$(tok),system:kube-scheduler,scheduler"
    echo "$(tok),kwok,kwok,\"system:masters\""
    echo "$(tok),batch-autoscaler-test,batch-autoscaler-test"
  } > "$PKI/tokens.csv"
  chmod 600 "$PKI/tokens.csv"
fi
token_of() { awk -F, -v u="$1" '$2 == u { print $1 }' "$PKI/tokens.csv"; }
ADMIN_TOKEN=$(token_of admin)

kubeconfig() { # file user token
  cat > "$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: batch-autoscaler-test
  cluster:
    server: $API_URL
    certificate-authority: $PKI/ca.crt
users:
- name: $2
  user:
    token: $3
contexts:
- name: $2@batch-autoscaler-test
  context:
    cluster: batch-autoscaler-test
    user: $2
    namespace: default
current-context: $2@batch-autoscaler-test
EOF
  chmod 600 "$1"
}
kubeconfig "$DIR/admin.kubeconfig" admin "$ADMIN_TOKEN"
kubeconfig "$DIR/autoscaler.kubeconfig" batch-autoscaler-test "$(token_of batch-autoscaler-test)"
kubeconfig "$DIR/run/kcm.kubeconfig" system:kube-controller-manager "$(token_of system:kube-controller-manager)"
kubeconfig "$DIR/run/scheduler.kubeconfig" system:kube-scheduler "$(token_of system:kube-scheduler)"
kubeconfig "$DIR/run/kwok.kubeconfig" kwok "$(token_of kwok)"

# ---------------------------------------------------------------- launch
write_cmd() { # name env-assignments... -- command...
  local name="$1"; shift
  {
    echo "#!/usr/bin/env bash"
    echo "# Generated by testenv/start-control-plane.sh; run to (re)start $name."
    printf 'exec'
    local a
    for a in "$@"; do printf ' %q' "$a"; done
    printf ' </dev/null >>%q 2>&1\n' "$DIR/logs/$name.log"
  } > "$DIR/run/$name.sh"
  chmod +x "$DIR/run/$name.sh"
}

write_cmd etcd "$ETCD_BIN" \
  --name=default \
  --data-dir="$DIR/etcd" \
  --listen-client-urls="http://127.0.0.1:$ETCD_PORT" \
  --advertise-client-urls="http://127.0.0.1:$ETCD_PORT" \
  --listen-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" \
  --initial-advertise-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" \
  --initial-cluster="default=http://127.0.0.1:$ETCD_PEER_PORT" \
  --unsafe-no-fsync=true \
  --quota-backend-bytes=$((2 * 1024 * 1024 * 1024)) \
  --log-level=warn

write_cmd kube-apiserver "$KUBE_APISERVER" \
  --etcd-servers="http://127.0.0.1:$ETCD_PORT" \
  --bind-address=127.0.0.1 \
  --advertise-address=127.0.0.1 \
  --secure-port="$API_PORT" \
  --cert-dir="$PKI" \
  --tls-cert-file="$PKI/apiserver.crt" \
  --tls-private-key-file="$PKI/apiserver.key" \
  --client-ca-file="$PKI/ca.crt" \
  --requestheader-client-ca-file="$PKI/ca.crt" \
  --requestheader-allowed-names=front-proxy-client \
  --requestheader-username-headers=X-Remote-User \
  --requestheader-group-headers=X-Remote-Group \
  --requestheader-extra-headers-prefix=X-Remote-Extra- \
  --token-auth-file="$PKI/tokens.csv" \
  --authorization-mode=Node,RBAC \
  --service-account-issuer=https://kubernetes.default.svc.cluster.local \
  --service-account-key-file="$PKI/sa.pub" \
  --service-account-signing-key-file="$PKI/sa.key" \
  --service-cluster-ip-range=10.96.0.0/16 \
  --endpoint-reconciler-type=none \
  --allow-privileged=true \
  --profiling=false \
  --v="$V"

write_cmd kube-controller-manager "$KUBE_CONTROLLER_MANAGER" \
  --kubeconfig="$DIR/run/kcm.kubeconfig" \
  --authentication-kubeconfig="$DIR/run/kcm.kubeconfig" \
  --authorization-kubeconfig="$DIR/run/kcm.kubeconfig" \
  --bind-address=127.0.0.1 \
  --secure-port="$KCM_PORT" \
  --cert-dir="$DIR/run/kcm-certs" \
  --controllers='*' \
  --use-service-account-credentials=true \
  --service-account-private-key-file="$PKI/sa.key" \
  --root-ca-file="$PKI/ca.crt" \
  --cluster-signing-cert-file="$PKI/ca.crt" \
  --cluster-signing-key-file="$PKI/ca.key" \
  --leader-elect=false \
  --profiling=false \
  ${KUBE_CONTROL_PLANE_QPS:+--kube-api-qps="$KUBE_CONTROL_PLANE_QPS"} \
  ${KUBE_CONTROL_PLANE_QPS:+--kube-api-burst="$((2 * KUBE_CONTROL_PLANE_QPS))"} \
  --v="$V"

scheduler_config=(--kubeconfig="$DIR/run/scheduler.kubeconfig" --leader-elect=false)
if [ -n "${KUBE_SCHEDULER_POD_MAX_BACKOFF_SECONDS:-}${KUBE_CONTROL_PLANE_QPS:-}" ]; then
  # With --config, --kubeconfig and --leader-elect are ignored: they go in the file.
  qps="${KUBE_CONTROL_PLANE_QPS:-50}"
  burst=$((2 * qps)); [ -n "${KUBE_CONTROL_PLANE_QPS:-}" ] || burst=100
  cat > "$DIR/run/scheduler-config.yaml" <<EOF
apiVersion: kubescheduler.config.k8s.io/v1
kind: KubeSchedulerConfiguration
clientConnection:
  kubeconfig: $DIR/run/scheduler.kubeconfig
  qps: $qps
  burst: $burst
leaderElection:
  leaderElect: false
podInitialBackoffSeconds: 1
podMaxBackoffSeconds: ${KUBE_SCHEDULER_POD_MAX_BACKOFF_SECONDS:-10}
EOF
  scheduler_config=(--config="$DIR/run/scheduler-config.yaml")
fi
write_cmd kube-scheduler "$KUBE_SCHEDULER" \
  "${scheduler_config[@]}" \
  --authentication-kubeconfig="$DIR/run/scheduler.kubeconfig" \
  --authorization-kubeconfig="$DIR/run/scheduler.kubeconfig" \
  --bind-address=127.0.0.1 \
  --secure-port="$SCHED_PORT" \
  --cert-dir="$DIR/run/scheduler-certs" \
  --profiling=false \
  --v="$V"

# HOME points into DIR so kwok never picks up a personal ~/.kwok/kwok.yaml.
write_cmd kwok env HOME="$DIR/kwok-home" "$KWOK_BIN" \
  --kubeconfig="$DIR/run/kwok.kubeconfig" \
  --config="$KWOK_STAGES" \
  --manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake \
  --cidr=10.244.0.0/16 \
  --node-ip=10.200.0.1 \
  --node-lease-duration-seconds=40 \
  --server-address="127.0.0.1:$KWOK_PORT"

cat > "$DIR/env" <<EOF
CONTROL_PLANE_DIR=$DIR
KUBECONFIG=$DIR/admin.kubeconfig
AUTOSCALER_KUBECONFIG=$DIR/autoscaler.kubeconfig
KUBE_API_URL=$API_URL
KUBE_CA_FILE=$PKI/ca.crt
KUBE_ADMIN_TOKEN=$ADMIN_TOKEN
ETCD_URL=http://127.0.0.1:$ETCD_PORT
KUBE_CONTROLLER_MANAGER_URL=https://127.0.0.1:$KCM_PORT
KUBE_SCHEDULER_URL=https://127.0.0.1:$SCHED_PORT
KWOK_URL=http://127.0.0.1:$KWOK_PORT
KWOK_NODE_ANNOTATION=kwok.x-k8s.io/node=fake
K8S_VERSION=$K8S_VERSION
ETCD_VERSION=$ETCD_VERSION
KWOK_VERSION=$KWOK_VERSION
EOF

started_at=$(date +%s)
deadline=$(( started_at + TIMEOUT ))
wait_for() { # description component command...
  local what="$1" comp="$2"; shift 2
  until "$@" >/dev/null 2>&1; do
    if ! cp_alive "$DIR" "$comp"; then
      cp_dump_logs "$DIR"
      cp_die "$comp exited while waiting for $what"
    fi
    if (( $(date +%s) >= deadline )); then
      cp_dump_logs "$DIR"
      cp_die "timed out after ${TIMEOUT}s waiting for $what"
    fi
    sleep 0.2
  done
  cp_log "$what after $(( $(date +%s) - started_at ))s"
}

up=0
on_exit() {
  if [[ $up -ne 1 ]]; then
    cp_log "start failed; stopping what was started (logs kept in $DIR/logs)"
    "$here/stop-control-plane.sh" "$DIR" >&2 || true
  fi
}
trap on_exit EXIT

cp_launch "$DIR" etcd
wait_for "etcd healthy" etcd curl -fsS "http://127.0.0.1:$ETCD_PORT/health"

cp_launch "$DIR" kube-apiserver
wait_for "kube-apiserver ready" kube-apiserver \
  curl -fsS --cacert "$PKI/ca.crt" -H "Authorization: Bearer $ADMIN_TOKEN" "$API_URL/readyz"

cp_launch "$DIR" kube-controller-manager
cp_launch "$DIR" kube-scheduler
cp_launch "$DIR" kwok
wait_for "kube-controller-manager healthy" kube-controller-manager \
  curl -fsSk "https://127.0.0.1:$KCM_PORT/healthz"
wait_for "kube-scheduler healthy" kube-scheduler \
  curl -fsSk "https://127.0.0.1:$SCHED_PORT/healthz"
wait_for "kwok healthy" kwok curl -fsS "http://127.0.0.1:$KWOK_PORT/healthz"
wait_for "default ServiceAccount" kube-controller-manager \
  curl -fsS --cacert "$PKI/ca.crt" -H "Authorization: Bearer $ADMIN_TOKEN" \
    "$API_URL/api/v1/namespaces/default/serviceaccounts/default"
up=1

cp_log "control plane up in $DIR ($(( $(date +%s) - started_at ))s)"
cat "$DIR/env"
