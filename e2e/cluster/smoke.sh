#!/usr/bin/env bash
# Smoke-test a cluster started by up.sh: nodes, scheduling + kwok pod stages, garbage collection
# (kube-controller-manager), server version, CRD CEL validation, RBAC for a minted ServiceAccount
# identity, TokenRequest, helm. Leaves the cluster as it found it (uses a throwaway namespace).
#
# Usage: smoke.sh [NAME]     (NAME defaults to "trainyard"; the cluster must be up)
set -euo pipefail

. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

NAME="${1:-trainyard}"
validate_name "$NAME"
KUBECONFIG_FILE="${CLUSTERS_DIR}/${NAME}/kubeconfig"
[[ -s "$KUBECONFIG_FILE" ]] || die "no kubeconfig at ${KUBECONFIG_FILE}; run up.sh ${NAME} first"
KUBECTL="$(need_bin kubectl)"
HELM="$(need_bin helm)"
k() { "$KUBECTL" --kubeconfig "$KUBECONFIG_FILE" "$@"; }

NS="smoke-$$"
SA_NS="smoke-sa-$$"
CRD="widgets.smoke.trainyard.dev"
PASS=0 FAIL=0
ok()   { PASS=$((PASS + 1)); printf 'ok    %s\n' "$*"; }
fail() { FAIL=$((FAIL + 1)); printf 'FAIL  %s\n' "$*"; }
check() { local what="$1"; shift; if "$@" >/dev/null 2>&1; then ok "$what"; else fail "$what"; fi; }
poll() { local n="$1"; shift; local i; for (( i = 0; i < n * 2; i++ )); do "$@" >/dev/null 2>&1 && return 0; sleep 0.5; done; return 1; }
cleanup() {
  k delete ns "$NS" "$SA_NS" --ignore-not-found --wait=false >/dev/null 2>&1 || true
  k delete crd "$CRD" --ignore-not-found --wait=false >/dev/null 2>&1 || true
  k delete clusterrolebinding "smoke-$$" --ignore-not-found >/dev/null 2>&1 || true
}
trap cleanup EXIT

k create ns "$NS" >/dev/null
k create ns "$SA_NS" >/dev/null

# Nodes
ready="$(k get nodes -l type=kwok -o jsonpath='{range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}' | grep -c True || true)"
(( ready >= 4 )) && ok "${ready} Ready kwok nodes" || fail "expected >= 4 Ready kwok nodes, got ${ready}"

# Server version (must not be v0.0.0)
sv="$(k version -o json | sed -n 's/.*"gitVersion": "\(v[^"]*\)".*/\1/p' | tail -1)"
[[ "$sv" == "${KUBE_VERSION}" ]] && ok "server version ${sv}" || fail "server version '${sv}' != ${KUBE_VERSION}"

# Scheduler + kwok pod-ready: a bare pod becomes Running
k -n "$NS" apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Pod
metadata: {name: bare}
spec:
  nodeSelector: {type: kwok}
  containers: [{name: c, image: busybox, command: [sleep, "infinity"], resources: {requests: {cpu: "1", memory: 1Gi}}}]
EOF
check "bare pod scheduled and Running" k -n "$NS" wait --for=jsonpath='{.status.phase}'=Running pod/bare --timeout=60s
# Job pods complete (kwok pod-complete stage) and the Job controller sees it
k -n "$NS" create job job1 --image=busybox >/dev/null
check "Job completes" k -n "$NS" wait --for=condition=Complete job/job1 --timeout=60s
# Pod deletion completes (kwok pod-delete stage)
check "pod deletion completes" k -n "$NS" delete pod bare --timeout=60s

# Garbage collection (kube-controller-manager): deleting the owner deletes the dependent
k -n "$NS" create configmap owner >/dev/null
uid="$(k -n "$NS" get configmap owner -o jsonpath='{.metadata.uid}')"
k -n "$NS" apply -f - >/dev/null <<EOF
apiVersion: v1
kind: ConfigMap
metadata:
  name: child
  ownerReferences: [{apiVersion: v1, kind: ConfigMap, name: owner, uid: "${uid}"}]
EOF
k -n "$NS" delete configmap owner >/dev/null
check "garbage collector deletes the dependent" poll 60 bash -c '! "$0" --kubeconfig "$1" -n "$2" get configmap child' "$KUBECTL" "$KUBECONFIG_FILE" "$NS"

# CRD with a CEL rule rejects a bad object and accepts a good one
k apply -f - >/dev/null <<EOF
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: ${CRD}}
spec:
  group: smoke.trainyard.dev
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            x-kubernetes-validations: [{rule: "self.min <= self.max", message: "min must be <= max"}]
            properties: {min: {type: integer}, max: {type: integer}}
EOF
k wait --for=condition=Established "crd/${CRD}" --timeout=30s >/dev/null
widget() { printf 'apiVersion: smoke.trainyard.dev/v1\nkind: Widget\nmetadata: {name: %s}\nspec: {min: %s, max: %s}\n' "$1" "$2" "$3"; }
if out="$(widget bad 5 1 | k -n "$NS" create -f - 2>&1)"; then fail "CEL rule did not reject a bad object"
elif grep -q 'min must be <= max' <<<"$out"; then ok "CEL rule rejects a bad object"
else fail "bad object rejected for another reason: $out"; fi
check "CEL rule accepts a good object" bash -c 'printf "%s" "$0" | "$1" --kubeconfig "$2" -n "$3" create -f -' "$(widget good 1 5)" "$KUBECTL" "$KUBECONFIG_FILE" "$NS"

# RBAC: a minted ServiceAccount identity is denied until a binding names the ServiceAccount
SA_USER="system:serviceaccount:${SA_NS}:trainyard"
SA_KC="$("$(dirname "${BASH_SOURCE[0]}")/kubeconfig-for.sh" "$NAME" "$SA_USER" system:serviceaccounts "system:serviceaccounts:${SA_NS}" system:authenticated)"
check "minted SA identity: denied without a binding" bash -c '! "$0" --kubeconfig "$1" auth can-i list pods -n "$2"' "$KUBECTL" "$SA_KC" "$SA_NS"
k -n "$SA_NS" create role pods --verb=get,list,watch --resource=pods >/dev/null
k -n "$SA_NS" create rolebinding pods --role=pods --serviceaccount="${SA_NS}:trainyard" >/dev/null
k create clusterrolebinding "smoke-$$" --clusterrole=view --serviceaccount="${SA_NS}:trainyard" >/dev/null
check "minted SA identity: RoleBinding grants list pods" poll 10 "$KUBECTL" --kubeconfig "$SA_KC" auth can-i list pods -n "$SA_NS"
check "minted SA identity: ClusterRoleBinding grants get configmaps cluster-wide" poll 10 "$KUBECTL" --kubeconfig "$SA_KC" auth can-i get configmaps -n default
check "minted SA identity: still denied delete pods" bash -c '! "$0" --kubeconfig "$1" auth can-i delete pods -n "$2"' "$KUBECTL" "$SA_KC" "$SA_NS"
# A real ServiceAccount token (TokenRequest) authenticates as the same user
k -n "$SA_NS" create serviceaccount trainyard >/dev/null
token="$(k -n "$SA_NS" create token trainyard --duration=10m)"
server="$(k config view --minify -o jsonpath='{.clusters[0].cluster.server}')"
who="$("$KUBECTL" --kubeconfig=/dev/null --server="$server" --insecure-skip-tls-verify --token="$token" auth whoami -o jsonpath='{.status.userInfo.username}' 2>/dev/null || true)"
[[ "$who" == "$SA_USER" ]] && ok "TokenRequest token authenticates as ${SA_USER}" || fail "TokenRequest token authenticated as '${who}'"
rm -f "$SA_KC"

# helm
hv="$("$HELM" version --template '{{.Version}}')"
[[ "$hv" == "${HELM_VERSION}" ]] && ok "helm ${hv}" || fail "helm version '${hv}' != ${HELM_VERSION}"
check "helm talks to the cluster" "$HELM" --kubeconfig "$KUBECONFIG_FILE" list -A

printf '%d passed, %d failed\n' "$PASS" "$FAIL"
(( FAIL == 0 ))
