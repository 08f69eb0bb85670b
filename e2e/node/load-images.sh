#!/usr/bin/env bash
# Copy images from Docker into the node's containerd (namespace k8s.io, where the CRI looks), so
# pods with imagePullPolicy IfNotPresent/Never use them: there is no registry to pull from.
#
# Skipped when containerd already holds that build: each imported image is labelled with its
# Docker image ID (dev.trainyard.docker-id), and an image whose label matches is left alone (a
# warm run takes well under a second per image). Otherwise `docker save | ctr images import`:
# containerd's content store skips the layer blobs it already has, so after a code change only
# the changed layers are written and unpacked (the stream is still the whole image).
#
# Usage: load-images.sh REF...    (needs the node's containerd running: e2e/node/up.sh)
set -euo pipefail

. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source=../images/lib.sh
. "${NODE_DIR}/../images/lib.sh"

(( $# )) || die "usage: $0 REF..."
ensure_docker
"${CTR[@]}" version >/dev/null 2>&1 || die "the node's containerd does not answer on ${CONTAINERD_SOCK}; run e2e/node/up.sh (log: ${NODE_LOGS}/containerd.log)"

# normalise REF: what containerd calls a Docker reference (docker.io/[library/]name:tag).
normalise() {
  local r="$1" name="${1%%:*}"
  [[ "$name" == */* ]] || r="library/${r}"
  [[ "${r%%/*}" == *.* || "${r%%/*}" == *:* || "${r%%/*}" == localhost ]] || r="docker.io/${r}"
  printf '%s' "$r"
}

for ref in "$@"; do
  id="$(image_id "$ref")"
  [[ -n "$id" ]] || die "Docker has no image ${ref}; build it first (e2e/images/build.sh, e2e/node/build.sh)"
  cref="$(normalise "$ref")"
  have="$("${CTR[@]}" images ls "name==${cref}" 2>/dev/null | awk 'NR > 1 {print $NF}')"
  if [[ ",${have}," == *",dev.trainyard.docker-id=${id},"* ]]; then
    log "${cref} is in containerd already (${id:7:12})"
    continue
  fi
  t0=$SECONDS
  logf="${NODE_LOGS}/load-images.log"
  log "importing ${ref} into containerd (${id:7:12}; log: ${logf})"
  mark="$(wc -c <"$logf" 2>/dev/null || echo 0)"
  if ! "$DOCKER" save "$ref" | "${CTR[@]}" images import --snapshotter overlayfs - >>"$logf" 2>&1; then
    tail -5 "$logf" >&2
    failure="$(tail -c +"$(( mark + 1 ))" "$logf")"
    # A full disk is the machine's to fix. Anything else is containerd's store gone inconsistent
    # (seen: "parent snapshot ... does not exist" after an import that a full disk killed): once,
    # take the node down, let up.sh start containerd on an empty store, and import everything again.
    if [[ "$failure" != *"no space left on device"* && -z "${TRAINYARD_NODE_HEALING:-}" ]]; then
      log "containerd's store looks inconsistent; resetting it and importing again"
      touch "${CONTAINERD_RESET}"
      export TRAINYARD_NODE_HEALING=1
      "${NODE_DIR}/down.sh" >&2
      "${NODE_DIR}/up.sh" >&2
      exec "$0" "$@"
    fi
    die "importing ${ref} into the node's containerd failed (log: ${logf})"
  fi
  "${CTR[@]}" images label "$cref" "dev.trainyard.docker-id=${id}" >/dev/null
  # The import also names the image by its Docker ID; that second name would keep this build's
  # layers alive after the tag moves on to the next build: drop it (the tag holds the image).
  "${CTR[@]}" images rm "$id" >/dev/null 2>&1 || true
  log "imported ${cref} in $(( SECONDS - t0 ))s"
done
