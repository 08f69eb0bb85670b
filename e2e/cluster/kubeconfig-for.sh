#!/usr/bin/env bash
# Mint a kubeconfig for a non-admin identity of a cluster created by up.sh, signed by the
# cluster's CA (a client certificate with CN=USER and O=GROUP...). Nothing grants it any
# permission: bind RBAC to USER/GROUP to give it some.
#
# Usage: kubeconfig-for.sh NAME USER [GROUP...]
# Example (the identity a ServiceAccount token would have, so RoleBindings whose subject is
# `kind: ServiceAccount, name: trainyard, namespace: trainyard-system` apply to it):
#   kubeconfig-for.sh trainyard system:serviceaccount:trainyard-system:trainyard \
#       system:serviceaccounts system:serviceaccounts:trainyard-system system:authenticated
# Writes $TRAINYARD_CACHE/clusters/NAME/kubeconfig-<sanitised USER> and prints its path.
set -euo pipefail

. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

(( $# >= 2 )) || die "usage: $0 NAME USER [GROUP...]"
NAME="$1" USER_NAME="$2"; shift 2
validate_name "$NAME"
[[ -n "$USER_NAME" ]] || die "USER must not be empty"

KWOKCTL="$(need_bin kwokctl)"
export PATH="${CURRENT_BIN}:${PATH}"
kwok_cluster_exists "$KWOKCTL" "$NAME" || die "cluster '${NAME}' does not exist; run up.sh ${NAME} first"

args=(--name "$NAME" --user "$USER_NAME")
# kwokctl's default group is system:masters (cluster-admin); always pass at least one group so a
# minted identity is never an admin by accident. system:authenticated is what the apiserver's
# authenticator adds for every authenticated user anyway.
groups=("$@")
(( ${#groups[@]} )) || groups=(system:authenticated)
for g in "${groups[@]}"; do
  [[ "$g" != "system:masters" ]] || log "warning: group system:masters makes this identity a cluster-admin"
  args+=(--group "$g")
done

OUT_DIR="${CLUSTERS_DIR}/${NAME}"
mkdir -p "$OUT_DIR"
OUT="${OUT_DIR}/kubeconfig-$(printf '%s' "$USER_NAME" | tr -c 'A-Za-z0-9._-' '_')"
tmp="${OUT}.tmp.$$"
"$KWOKCTL" get kubeconfig "${args[@]}" > "$tmp"
mv -f "$tmp" "$OUT"
chmod 600 "$OUT"
printf '%s\n' "$OUT"
