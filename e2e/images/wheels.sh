#!/usr/bin/env bash
# Fill the shared wheel cache ($TRAINYARD_CACHE/wheels) with every wheel the operator and trainer
# images install: the runtime pins of pyproject.toml and trainer-image/pyproject.toml (with their
# dependencies), plus the build backend (setuptools) for the projects themselves.
#
# The image builds install from this directory only (pip --no-index, served on 127.0.0.1 by
# build.sh), so torch and its ~2.7 GB of nvidia wheels are downloaded once per machine, not once
# per build; the same directory can serve a venv (`pip install --find-links $TRAINYARD_CACHE/wheels`).
# The wheels are chosen for the images' Python (CPython 3.11, manylinux x86_64), whatever Python
# runs pip here. A warm run downloads nothing (pip keeps files already in --dest), but still asks
# the index to resolve; build.sh skips it altogether when the requirement set's stamp matches.
#
# Usage: wheels.sh            prints the stamp file path on success
set -euo pipefail

. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

LOG="${LOG_DIR}/wheels.log"
REQS="$(wheel_requirements)"
STAMP="${WHEEL_CACHE}/.complete-$(printf '%s\n' "$REQS" | sha256sum | cut -c1-12)"
if [[ -f "$STAMP" ]]; then
  printf '%s\n' "$STAMP"
  exit 0
fi

PIP=()
for py in "${REPO_ROOT}/.venv/bin/python" python3; do
  if "$py" -m pip --version >/dev/null 2>&1; then PIP=("$py" -m pip); break; fi
done
(( ${#PIP[@]} )) || idie "no pip to download wheels with (python3 -m pip)"

START=$SECONDS
ilog "downloading wheels into ${WHEEL_CACHE} (log: ${LOG})"
REQ_FILE="$(mktemp)"
trap 'rm -f "$REQ_FILE"' EXIT
printf '%s\n' "$REQS" > "$REQ_FILE"
# Every manylinux tag the images' glibc (Debian bookworm: 2.36) accepts; pip does not widen an
# explicit --platform to the older compatible tags by itself.
PLATFORMS=(--platform linux_x86_64 --platform manylinux1_x86_64 --platform manylinux2010_x86_64 --platform manylinux2014_x86_64)
for (( minor = 5; minor <= 36; minor++ )); do PLATFORMS+=(--platform "manylinux_2_${minor}_x86_64"); done
# --only-binary with an explicit target: wheels for the images' interpreter, not this one.
if ! "${PIP[@]}" download --quiet --disable-pip-version-check --dest "$WHEEL_CACHE" \
     --only-binary=:all: --implementation cp --python-version 3.11 --abi cp311 \
     "${PLATFORMS[@]}" \
     -r "$REQ_FILE" >"$LOG" 2>&1; then
  tail -20 "$LOG" >&2
  idie "pip download failed (log: ${LOG})"
fi
touch "$STAMP"
ilog "wheels ready in $(( SECONDS - START ))s: $(du -sh "$WHEEL_CACHE" | cut -f1) in ${WHEEL_CACHE}"
printf '%s\n' "$STAMP"
