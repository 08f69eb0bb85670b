# shellcheck shell=bash disable=SC2034  # settings for the scripts that source this file
# Common settings for e2e/images/*.sh (and e2e/node/*.sh). Sourced, never executed.

IMAGES_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "${IMAGES_DIR}/../.." && pwd)"
# shellcheck source=versions.env
. "${IMAGES_DIR}/versions.env"

TRAINYARD_CACHE="${TRAINYARD_CACHE:-${HOME}/.cache/trainyard}"
IMAGES_CACHE="${TRAINYARD_CACHE}/images"
LOG_DIR="${TRAINYARD_CACHE}/logs"
# pip's wheel cache, shared by every image build (a BuildKit cache mount cannot be seen from the
# host; a bind mount of this directory can, so the same wheels also serve a venv on the host).
WHEEL_CACHE="${TRAINYARD_CACHE}/wheels"
DOCKERD_PIDFILE="${TRAINYARD_CACHE}/node/dockerd.pid"
DOCKERD_LOG="${LOG_DIR}/dockerd.log"
mkdir -p "${IMAGES_CACHE}" "${LOG_DIR}" "${WHEEL_CACHE}" "$(dirname "${DOCKERD_PIDFILE}")"

ilog() { printf '[images] %s\n' "$*" >&2; }
idie() { printf '[images] ERROR: %s\n' "$*" >&2; exit 1; }

# The chart's appVersion is the operator image's tag (the chart's default image).
app_version() { sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' "${REPO_ROOT}/charts/trainyard/Chart.yaml"; }
# The tag examples/digits-ddp.yaml names.
trainer_image_ref() { sed -n 's/^ *image: *\(trainyard\/trainer:[^ ]*\)$/\1/p' "${REPO_ROOT}/examples/digits-ddp.yaml" | head -1; }

# ---------------------------------------------------------------------------------------------
# Docker: a CLI that can run BuildKit builds, and a daemon.
# ---------------------------------------------------------------------------------------------
# BuildKit is needed for `RUN --mount` (the wheel cache, the CA bundle as a secret). A Docker
# CLI >= 23 does BuildKit builds only through the buildx plugin; an older CLI (Debian's 20.10)
# does them itself with DOCKER_BUILDKIT=1. Both are accepted; DOCKER=... picks a CLI.
DOCKER_BUILD=()
pick_docker() {
  local c v
  for c in ${DOCKER:-} docker /usr/bin/docker; do
    command -v "$c" >/dev/null 2>&1 || continue
    if "$c" buildx version >/dev/null 2>&1; then
      DOCKER="$c" DOCKER_BUILD=("$c" buildx build --load); return 0
    fi
    v="$("$c" version --format '{{.Client.Version}}' 2>/dev/null || "$c" --version 2>/dev/null | sed -n 's/^Docker version \([0-9.]*\).*/\1/p')"
    if [[ "${v%%.*}" =~ ^[0-9]+$ ]] && (( ${v%%.*} < 23 )); then
      DOCKER="$c" DOCKER_BUILD=(env DOCKER_BUILDKIT=1 "$c" build); return 0
    fi
  done
  return 1
}

# ensure_docker: a Docker CLI with BuildKit and a running daemon. As root on a machine without a
# running daemon (no systemd here), start dockerd by hand with a pidfile (stopped by
# e2e/node/down.sh --docker, or `kill $(cat pidfile)`).
ensure_docker() {
  pick_docker || idie "no Docker CLI that can build with BuildKit (need the buildx plugin, or Debian's docker.io 20.10 CLI); install docker.io (e2e/node/deps.sh)"
  "$DOCKER" info >/dev/null 2>&1 && return 0
  local dockerd
  dockerd="$(command -v dockerd || true)"
  [[ -n "$dockerd" && $(id -u) -eq 0 ]] || idie "the Docker daemon is not running and cannot be started here (dockerd: ${dockerd:-missing}, uid $(id -u))"
  ilog "starting dockerd (log: ${DOCKERD_LOG}, pidfile: ${DOCKERD_PIDFILE})"
  # setsid: not a child of this script's session; fds closed so no caller's lock is inherited.
  setsid "$dockerd" --pidfile "${DOCKERD_PIDFILE}" </dev/null >>"${DOCKERD_LOG}" 2>&1 9>&- &
  local t0=$SECONDS
  until "$DOCKER" info >/dev/null 2>&1; do
    (( SECONDS - t0 < 120 )) || idie "dockerd did not answer within 120s (log: ${DOCKERD_LOG})"
    sleep 0.5
  done
}

# image_id REF: the local image's ID, or nothing.
image_id() { "$DOCKER" image inspect --format '{{.Id}}' "$1" 2>/dev/null || true; }

# image_label REF KEY
image_label() { "$DOCKER" image inspect --format "{{index .Config.Labels \"$2\"}}" "$1" 2>/dev/null || true; }

# The machine's extra CA certificates (a TLS-intercepting egress proxy's, say) as one PEM bundle,
# handed to pip inside `docker build` as a BuildKit secret: used while installing, never stored
# in an image layer. Empty (and harmless) on a machine without any.
ca_bundle() {
  local out="${IMAGES_CACHE}/ca-bundle.pem" f
  : > "${out}.tmp"
  for f in /etc/ssl/certs/ca-certificates.crt /etc/pki/tls/certs/ca-bundle.crt; do
    [[ -s "$f" ]] && { cat "$f" > "${out}.tmp"; break; }
  done
  mv -f "${out}.tmp" "$out"
  printf '%s' "$out"
}

# wheel_requirements: every requirement the images install, one a line: the runtime pins of both
# pyproject.toml files (the trainer's `examples` extra included) and the build backend.
wheel_requirements() {
  python3 - "${REPO_ROOT}" "${SETUPTOOLS_VERSION}" <<'PY'
import sys, tomllib, pathlib
root, setuptools = pathlib.Path(sys.argv[1]), sys.argv[2]
reqs = []
for p, extras in ((root / "pyproject.toml", ()), (root / "trainer-image" / "pyproject.toml", ("examples",))):
    proj = tomllib.loads(p.read_text())["project"]
    reqs += proj.get("dependencies", [])
    for e in extras:
        reqs += proj.get("optional-dependencies", {}).get(e, [])
reqs.append(f"setuptools=={setuptools}")
print("\n".join(sorted(set(reqs))))
PY
}
