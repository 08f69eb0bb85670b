#!/usr/bin/env bash
# Install the Debian packages the images and the node need (docker.io, containerd, runc,
# containernetworking-plugins, debootstrap, iptables), at the versions pinned in versions.env.
# A no-op when they are installed. A Debian mirror keeps only the newest build of a package: when
# a pinned version is gone (a point release replaced it), the mirror's version is installed and
# a warning names both.
#
# Usage: deps.sh     (root; Debian bookworm)
set -euo pipefail

. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

missing=()
for spec in ${DEB_PACKAGES}; do
  pkg="${spec%%=*}"
  dpkg-query -W -f '${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$spec")
done
if (( ${#missing[@]} == 0 )); then
  log "Debian packages present: $(for s in ${DEB_PACKAGES}; do dpkg-query -W -f '${Package}=${Version} ' "${s%%=*}"; done)"
  exit 0
fi
[[ $(id -u) -eq 0 ]] || die "installing ${missing[*]} needs root"
command -v apt-get >/dev/null 2>&1 || die "no apt-get: install ${missing[*]} with this system's package manager"
LOG="${NODE_LOGS}/apt.log"
log "installing ${missing[*]} (log: ${LOG})"
apt-get update -q >"$LOG" 2>&1 || { tail -5 "$LOG" >&2; die "apt-get update failed (log: ${LOG})"; }
install=()
for spec in "${missing[@]}"; do
  pkg="${spec%%=*}" want="${spec#*=}"
  have="$(apt-cache madison "$pkg" 2>/dev/null | awk -v v="$want" '$3 == v {print $3; exit}')"
  if [[ -n "$have" ]]; then
    install+=("$spec")
  else
    log "WARNING: ${pkg} ${want} is not on the mirror any more; installing its current version $(apt-cache policy "$pkg" | awk '/Candidate:/ {print $2}')"
    install+=("$pkg")
  fi
done
DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${install[@]}" >>"$LOG" 2>&1 ||
  { tail -10 "$LOG" >&2; die "apt-get install ${install[*]} failed (log: ${LOG})"; }
log "installed: $(for s in "${missing[@]}"; do dpkg-query -W -f '${Package}=${Version} ' "${s%%=*}"; done)"
