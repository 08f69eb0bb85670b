#!/usr/bin/env bash
# Build the project's images with Docker (BuildKit): the same script for `make images`, the node
# tier (tests/node) and the e2e-kind workflow, so they cannot drift.
#
#   trainyard/operator:<chart appVersion>   operator/Dockerfile (context: the repository root)
#   trainyard/trainer:<examples' tag>       trainer-image/Dockerfile
#   trainyard/trainer:test                  e2e/kind/stand-in-trainer (only with --with-stand-in)
#
# Base (--base, or IMAGES_BASE):
#   local   (default) no registry: base.sh makes trainyard/python-base from Debian's python3, the
#           wheels come from the wheel cache (wheels.sh) served on 127.0.0.1 to the build, torch
#           comes from PyPI (its CUDA build), and CUDA_PRUNE=1 cuts it to what a CPU run loads.
#   public  the Dockerfiles' defaults: python:3.11 slim from Docker Hub, the CPU torch index.
#
# Cached: each image is labelled with a hash of its inputs (Dockerfile, context files, build
# arguments, base image ID); when an image with that label exists under its tag, nothing runs.
# Otherwise `docker build` runs, itself layer-cached (a code change rebuilds only the top layers).
# Prints "REF ID" for every image on stdout. Logs: $TRAINYARD_CACHE/logs/image-<name>.log.
#
# Usage: build.sh [--base local|public] [--with-stand-in] [--only operator|trainer|stand-in] [--force]
# Env: IMAGES_BASE (local), WHEELS_PORT (18765: the wheel server's port on 127.0.0.1), TRAINYARD_CACHE.
set -euo pipefail

. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

BASE="${IMAGES_BASE:-local}" FORCE=0 ONLY="" STAND_IN=0
while (( $# )); do
  case "$1" in
    --base) BASE="$2"; shift ;;
    --base=*) BASE="${1#--base=}" ;;
    --only) ONLY="$2"; shift ;;
    --only=*) ONLY="${1#--only=}" ;;
    --with-stand-in) STAND_IN=1 ;;
    --force) FORCE=1 ;;
    -h|--help) sed -n '2,21p' "$0"; exit 0 ;;
    *) idie "unknown argument: $1" ;;
  esac
  shift
done
[[ "$BASE" == local || "$BASE" == public ]] || idie "--base must be local or public (got '$BASE')"

# Bump when the way images are built changes (arguments, this script), to force a rebuild.
RECIPE=1
START=$SECONDS
ensure_docker

OPERATOR_REF="trainyard/operator:$(app_version)"
TRAINER_REF="$(trainer_image_ref)"
[[ "$OPERATOR_REF" != "trainyard/operator:" && -n "$TRAINER_REF" ]] ||
  idie "cannot read the image tags (charts/trainyard/Chart.yaml appVersion, examples/digits-ddp.yaml image)"

ARGS=()
if [[ "$BASE" == local ]]; then
  PYTHON_IMAGE="$("${IMAGES_DIR}/base.sh" | tail -1)"
  ARGS+=(--build-arg "PYTHON_IMAGE=${PYTHON_IMAGE}")
else
  PYTHON_IMAGE="${PUBLIC_PYTHON_IMAGE}"
  ARGS+=(--build-arg "PYTHON_IMAGE=${PYTHON_IMAGE}")
fi

# The hash of a build's inputs: the files of its context (minus caches), its arguments, the ID of
# its base image (a rebuilt base rebuilds the images) and RECIPE.
inputs_key() { # inputs_key BASE_ID ARG... -- PATH...
  local base_id="$1"; shift
  local args=()
  while [[ "$1" != -- ]]; do args+=("$1"); shift; done
  shift
  {
    printf 'recipe=%s base=%s\n' "$RECIPE" "$base_id"
    printf '%s\n' "${args[@]}"
    # Tool caches are no input (they are in no image either: see the .dockerignore files).
    (cd "$REPO_ROOT" && find "$@" -type f ! -path '*/__pycache__/*' ! -name '*.pyc' ! -path '*/.ruff_cache/*' \
       ! -path '*/.pytest_cache/*' ! -path '*.egg-info/*' -print0 | LC_ALL=C sort -z |
       xargs -0 sha256sum)
  } | sha256sum | cut -c1-16
}

WHEEL_SERVER_PID=""
stop_wheel_server() {
  if [[ -n "$WHEEL_SERVER_PID" ]]; then
    kill "$WHEEL_SERVER_PID" 2>/dev/null || true
    wait "$WHEEL_SERVER_PID" 2>/dev/null || true
    WHEEL_SERVER_PID=""
  fi
}
trap stop_wheel_server EXIT

# The wheel cache over HTTP on loopback, for pip inside `docker build --network=host` (a BuildKit
# build cannot bind-mount a host directory; this way the same files also serve a venv).
start_wheel_server() {
  [[ -z "$WHEEL_SERVER_PID" ]] || return 0
  "${IMAGES_DIR}/wheels.sh" >/dev/null
  local portfile port t0=$SECONDS
  portfile="$(mktemp)"
  # A fixed port (WHEELS_PORT): WHEELS_URL is a build argument, part of the cache key of the
  # layers that install from it; a new port per run would reinstall torch at every rebuild. When
  # the port is taken, any free one is used (and the install layers are rebuilt once).
  python3 - "$WHEEL_CACHE" "$portfile" "${WHEELS_PORT:-18765}" >>"${LOG_DIR}/wheel-server.log" 2>&1 <<'PY' &
import functools, http.server, sys
handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=sys.argv[1])
try:
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[3])), handler)
except OSError as e:
    print(f"port {sys.argv[3]} unavailable ({e}); using a free one", file=sys.stderr, flush=True)
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
with open(sys.argv[2], "w") as f:
    f.write(str(srv.server_address[1]))
srv.serve_forever()
PY
  WHEEL_SERVER_PID=$!
  until [[ -s "$portfile" ]]; do
    kill -0 "$WHEEL_SERVER_PID" 2>/dev/null || idie "the wheel server did not start (log: ${LOG_DIR}/wheel-server.log)"
    (( SECONDS - t0 < 30 )) || idie "the wheel server did not report its port within 30s (log: ${LOG_DIR}/wheel-server.log)"
    sleep 0.2
  done
  port="$(cat "$portfile")"; rm -f "$portfile"
  WHEELS_URL="http://127.0.0.1:${port}/"
}

# build_image NAME REF DOCKERFILE CONTEXT [BUILD-ARG...] -- INPUT-PATH...
build_image() {
  local name="$1" ref="$2" dockerfile="$3" context="$4"; shift 4
  local extra=() paths=() key base_id log="${LOG_DIR}/image-${name}.log" t0=$SECONDS
  while [[ "$1" != -- ]]; do extra+=("$1"); shift; done
  shift; paths=("$@")
  base_id="$(image_id "$PYTHON_IMAGE")"
  [[ -n "$base_id" ]] || base_id="$PYTHON_IMAGE"   # public base, not pulled yet: its name stands in
  key="$(inputs_key "$base_id" "${ARGS[@]}" "${extra[@]}" -- "${paths[@]}")"
  if [[ $FORCE -eq 0 && "$(image_label "$ref" dev.trainyard.inputs)" == "$key" ]]; then
    ilog "${ref} is up to date (inputs ${key})"
    printf '%s %s\n' "$ref" "$(image_id "$ref")"
    return 0
  fi
  local net=() wheel_args=() secret=()
  if [[ "$BASE" == local ]]; then
    start_wheel_server
    net=(--network=host)
    wheel_args=(--build-arg "WHEELS_URL=${WHEELS_URL}")
  else
    secret=(--secret "id=pip-ca,src=$(ca_bundle)")
  fi
  ilog "building ${ref} (${dockerfile}; log: ${log})"
  if ! (cd "$REPO_ROOT" && "${DOCKER_BUILD[@]}" --progress=plain "${net[@]}" "${secret[@]}" \
          "${ARGS[@]}" "${wheel_args[@]}" "${extra[@]}" \
          --label "dev.trainyard.inputs=${key}" -f "$dockerfile" -t "$ref" "$context") >"$log" 2>&1; then
    tail -30 "$log" >&2
    idie "building ${ref} failed (log: ${log})"
  fi
  ilog "built ${ref} in $(( SECONDS - t0 ))s ($("$DOCKER" image inspect --format '{{.Size}}' "$ref" | awk '{printf "%.0f MB", $1/1e6}'))"
  printf '%s %s\n' "$ref" "$(image_id "$ref")"
}

want() { [[ -z "$ONLY" || ",${ONLY}," == *",$1,"* ]]; }

if want operator; then
  build_image operator "$OPERATOR_REF" operator/Dockerfile . -- \
    operator/Dockerfile .dockerignore pyproject.toml README.md operator/trainyard
fi
if want trainer; then
  trainer_args=(--build-arg "TORCH_VERSION=${TORCH_VERSION}" --build-arg "SCIKIT_LEARN_VERSION=${SCIKIT_LEARN_VERSION}")
  if [[ "$BASE" == local ]]; then
    # PyPI's torch is the CUDA build (the CPU index is a download site this machine cannot reach).
    trainer_args+=(--build-arg "TORCH_INDEX=https://pypi.org/simple" --build-arg CUDA_PRUNE=1)
  fi
  build_image trainer "$TRAINER_REF" trainer-image/Dockerfile trainer-image "${trainer_args[@]}" -- trainer-image
fi
if (( STAND_IN )) || [[ ",${ONLY}," == *",stand-in,"* ]]; then
  # A busybox-sized stand-in; without a registry, the local base has the same /bin/sh.
  stand_in_args=()
  [[ "$BASE" == local ]] && stand_in_args=(--build-arg "BASE_IMAGE=${PYTHON_IMAGE}")
  build_image stand-in trainyard/trainer:test e2e/kind/stand-in-trainer/Dockerfile e2e/kind/stand-in-trainer \
    "${stand_in_args[@]}" -- e2e/kind/stand-in-trainer
fi
ilog "images ready in $(( SECONDS - START ))s"
