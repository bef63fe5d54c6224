#!/usr/bin/env bash
# Smoke test of the end-to-end control plane: build (cached), start in a temp
# dir, then check that
#   - a fake Node (kwok annotation) becomes Ready with the capacity we gave it;
#   - RBAC is enforced for the unprivileged test identity, and ServiceAccount
#     tokens minted by the TokenRequest API authenticate;
#   - a Job of 3 pods annotated batch-autoscaler.io/sim-duration=10s runs and
#     completes (not before 10 s);
#   - a Deployment pod covered by a PDB is evicted through policy/v1 Eviction
#     only when the PDB allows it (429, then 201) and then goes away;
# and stop everything. Exits non-zero on any failure, printing component logs.
#
# Usage: testenv/smoke.sh            (KEEP_CONTROL_PLANE=1 keeps the temp dir)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=lib.sh
. "$here/lib.sh"

t0=$(date +%s)
step() { printf '[smoke] +%ss %s\n' "$(( $(date +%s) - t0 ))" "$*" >&2; }

step "building (cached)"
build_env="$("$here/build-control-plane.sh")"
KUBECTL="$(sed -n 's/^KUBECTL=//p' <<<"$build_env")"
[[ -x "$KUBECTL" ]] || cp_die "kubectl not built"

DIR="$(mktemp -d "${TMPDIR:-/tmp}/batch-autoscaler-smoke.XXXXXX")"
ok=0
finish() {
  local rc=$?
  if [[ $ok -ne 1 ]]; then
    step "FAILED (exit $rc); component logs follow"
    cp_dump_logs "$DIR" 60
  fi
  "$here/stop-control-plane.sh" "$DIR" || true
  for c in "${CP_COMPONENTS[@]}"; do
    if cp_alive "$DIR" "$c"; then echo "[smoke] $c still running after stop" >&2; rc=1; fi
  done
  if [[ $ok -eq 1 && -z "${KEEP_CONTROL_PLANE:-}" ]]; then rm -rf "$DIR"; else step "kept $DIR"; fi
  exit "$rc"
}
trap finish EXIT

step "starting control plane in $DIR"
"$here/start-control-plane.sh" "$DIR" >/dev/null
# shellcheck disable=SC1091
. "$DIR/env"
export KUBECONFIG
k() { "$KUBECTL" "$@"; }
fail() { echo "[smoke] FAIL: $*" >&2; exit 1; }

v="$(k version -o json | sed -n 's/.*"gitVersion": "\(v[^"]*\)".*/\1/p' | tail -n1)"
[[ "$v" == "$K8S_VERSION" ]] || fail "server version '$v', expected $K8S_VERSION"
step "apiserver /version is $v"

# ------------------------------------------------------------------ identity
if k --kubeconfig "$AUTOSCALER_KUBECONFIG" get nodes >/dev/null 2>&1; then
  fail "unprivileged identity could list nodes: RBAC not enforced"
fi
k create namespace smoke >/dev/null
k -n smoke create serviceaccount probe >/dev/null
"$here/sa-kubeconfig.sh" "$DIR" smoke probe "$DIR/probe.kubeconfig" 10m
who="$(k --kubeconfig "$DIR/probe.kubeconfig" auth whoami -o jsonpath='{.status.userInfo.username}')"
[[ "$who" == "system:serviceaccount:smoke:probe" ]] || fail "TokenRequest token authenticated as '$who'"
if k --kubeconfig "$DIR/probe.kubeconfig" get nodes >/dev/null 2>&1; then
  fail "ServiceAccount without bindings could list nodes: RBAC not enforced"
fi
k create clusterrole smoke-node-reader --verb=get,list,watch --resource=nodes >/dev/null
k create clusterrolebinding smoke-node-reader --clusterrole=smoke-node-reader \
  --serviceaccount=smoke:probe >/dev/null
for i in $(seq 1 50); do
  k --kubeconfig "$DIR/probe.kubeconfig" get nodes >/dev/null 2>&1 && break
  (( i < 50 )) || fail "ServiceAccount still cannot list nodes after its ClusterRoleBinding"
  sleep 0.2
done
step "RBAC enforced; TokenRequest kubeconfig authenticates as $who and gains its binding"

# ------------------------------------------------------------------ node
k apply -f - >/dev/null <<'EOF'
apiVersion: v1
kind: Node
metadata:
  name: smoke-node-1
  annotations:
    kwok.x-k8s.io/node: fake
  labels:
    kubernetes.io/hostname: smoke-node-1
    node.kubernetes.io/instance-type: m5.xlarge
    topology.kubernetes.io/zone: us-west-2a
spec:
  providerID: aws:///us-west-2a/i-0123456789abcdef0
status:
  capacity:
    cpu: "4"
    memory: 16Gi
    pods: "110"
  allocatable:
    cpu: "4"
    memory: 16Gi
    pods: "110"
EOF
k wait --for=condition=Ready node/smoke-node-1 --timeout=90s >/dev/null
alloc="$(k get node smoke-node-1 -o jsonpath='{.status.allocatable.cpu}/{.status.allocatable.memory}/{.status.allocatable.pods}')"
[[ "$alloc" == "4/16Gi/110" ]] || fail "node allocatable is $alloc, expected 4/16Gi/110"
step "node smoke-node-1 Ready, allocatable $alloc"

for i in $(seq 1 300); do
  k -n smoke get serviceaccount default >/dev/null 2>&1 && break
  sleep 0.2
done

# ------------------------------------------------------------------ job
job_start=$(date +%s)
k -n smoke apply -f - >/dev/null <<'EOF'
apiVersion: batch/v1
kind: Job
metadata:
  name: sleepers
spec:
  completions: 3
  parallelism: 3
  backoffLimit: 0
  template:
    metadata:
      annotations:
        batch-autoscaler.io/sim-duration: 10s
    spec:
      restartPolicy: Never
      containers:
      - name: work
        image: busybox
        resources:
          requests:
            cpu: 500m
            memory: 1Gi
EOF
k -n smoke wait --for=jsonpath='{.status.ready}'=3 job/sleepers --timeout=60s >/dev/null
running="$(k -n smoke get pods -l job-name=sleepers --field-selector=status.phase=Running -o name | wc -l)"
[[ "$running" -eq 3 ]] || fail "$running Job pods Running, expected 3"
ips="$(k -n smoke get pods -l job-name=sleepers -o jsonpath='{range .items[*]}{.status.podIP}{" "}{end}')"
[[ "$(wc -w <<<"$ips")" -eq 3 ]] || fail "Job pods lack pod IPs: '$ips'"
step "3 Job pods Running on the fake node (IPs $ips)"
k -n smoke wait --for=condition=Complete job/sleepers --timeout=120s >/dev/null
took=$(( $(date +%s) - job_start ))
(( took >= 10 )) || fail "Job completed after ${took}s, before its 10s sim-duration"
succeeded="$(k -n smoke get job sleepers -o jsonpath='{.status.succeeded}')"
[[ "$succeeded" == 3 ]] || fail "Job succeeded=$succeeded, expected 3"
step "Job complete after ${took}s (3 succeeded)"

# ------------------------------------------------------------------ eviction
k -n smoke apply -f - >/dev/null <<'EOF'
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: web
        image: nginx
        resources:
          requests:
            cpu: 100m
            memory: 128Mi
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: web
spec:
  minAvailable: 2
  selector:
    matchLabels: {app: web}
EOF
k -n smoke rollout status deployment/web --timeout=90s >/dev/null
k -n smoke wait --for=jsonpath='{.status.currentHealthy}'=2 pdb/web --timeout=60s >/dev/null
pod="$(k -n smoke get pods -l app=web -o jsonpath='{.items[0].metadata.name}')"

evict() { # pod -> HTTP status code
  curl -sS -o "$DIR/eviction.json" -w '%{http_code}' \
    --cacert "$KUBE_CA_FILE" -H "Authorization: Bearer $KUBE_ADMIN_TOKEN" \
    -H 'Content-Type: application/json' -X POST \
    --data "{\"apiVersion\":\"policy/v1\",\"kind\":\"Eviction\",\"metadata\":{\"name\":\"$1\",\"namespace\":\"smoke\"}}" \
    "$KUBE_API_URL/api/v1/namespaces/smoke/pods/$1/eviction"
}
code="$(evict "$pod")"
[[ "$code" == 429 ]] || { cat "$DIR/eviction.json" >&2; fail "eviction under a forbidding PDB returned $code, expected 429"; }
step "eviction of $pod refused by the PDB: 429"

k -n smoke patch pdb web --type=merge -p '{"spec":{"minAvailable":1}}' >/dev/null
k -n smoke wait --for=jsonpath='{.status.disruptionsAllowed}'=1 pdb/web --timeout=60s >/dev/null
code="$(evict "$pod")"
[[ "$code" == 201 ]] || { cat "$DIR/eviction.json" >&2; fail "eviction under an allowing PDB returned $code, expected 201"; }
step "eviction of $pod allowed by the PDB: 201"
k -n smoke wait --for=delete "pod/$pod" --timeout=60s >/dev/null
for i in $(seq 1 300); do
  names="$(k -n smoke get pods -l app=web --field-selector=status.phase=Running \
    -o jsonpath='{range .items[*]}{.metadata.name}{" "}{end}')"
  [[ "$(wc -w <<<"$names")" -eq 2 && " $names " != *" $pod "* ]] && break
  (( i < 300 )) || fail "Deployment did not get back to 2 Running pods (have: $names)"
  sleep 0.2
done
step "evicted pod deleted; replacement Running ($names)"

# ------------------------------------------------------------------ restart
"$here/restart-component.sh" "$DIR" kube-apiserver --kill
k get node smoke-node-1 >/dev/null || fail "apiserver not serving after restart"
[[ "$(k -n smoke get job sleepers -o jsonpath='{.status.succeeded}')" == 3 ]] \
  || fail "state lost across apiserver restart"
step "apiserver SIGKILLed and restarted; state intact"

ok=1
step "PASS"
