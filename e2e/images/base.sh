#!/usr/bin/env bash
# Make the local base image of the operator and trainer images, without any registry: a Debian
# minbase rootfs made by debootstrap from Debian's package mirror, with Debian's python3 (3.11),
# python3-venv, python-is-python3 (the Dockerfiles call `python`), ca-certificates and passwd
# (useradd), imported with `docker import`.
#
# Prints the image reference (trainyard/python-base:<suite>-<key>) as the last stdout line. The
# key hashes BASE_RECIPE and the BASE_* pins of versions.env, so a warm run finds the image and does nothing; the
# Debian package versions that went in are in the image's label trainyard.base.packages.
#
# Usage: base.sh [--force]     (needs root, debootstrap and Docker; e2e/node/deps.sh installs them)
set -euo pipefail

. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

FORCE=0
[[ "${1:-}" == "--force" ]] && FORCE=1

# Bump when the way the base is made changes (the debootstrap command, what is removed after it).
BASE_RECIPE=1
# The key: the recipe and the base's pins (not the rest of versions.env, which the base ignores).
KEY="$(printf '%s\n' "${BASE_RECIPE}" "${BASE_SUITE}" "${BASE_MIRROR}" "${BASE_PACKAGES}" | sha256sum | cut -c1-12)"
REF="trainyard/python-base:${BASE_SUITE}-${KEY}"
LOG="${LOG_DIR}/base-image.log"

ensure_docker
if [[ $FORCE -eq 0 && -n "$(image_id "$REF")" ]]; then
  printf '%s\n' "$REF"
  exit 0
fi

command -v debootstrap >/dev/null 2>&1 || idie "debootstrap is not installed (run e2e/node/deps.sh, or apt-get install debootstrap)"
[[ $(id -u) -eq 0 ]] || idie "debootstrap needs root"

START=$SECONDS
ROOTFS="$(mktemp -d "${IMAGES_CACHE}/base-rootfs.XXXXXX")"
cleanup() { rm -rf "$ROOTFS"; }
trap cleanup EXIT

ilog "debootstrap ${BASE_SUITE} (minbase + ${BASE_PACKAGES}) from ${BASE_MIRROR} (log: ${LOG})"
if ! debootstrap --variant=minbase --include="${BASE_PACKAGES// /,},passwd" \
     "${BASE_SUITE}" "$ROOTFS" "${BASE_MIRROR}" >"$LOG" 2>&1; then
  tail -20 "$LOG" >&2
  idie "debootstrap failed (log: ${LOG})"
fi

# The package versions that went in (for the label), then what an image does not need: apt's
# package lists and caches, documentation, man pages, and logs.
# shellcheck disable=SC2016  # dpkg-query's own format, not shell
PKGS="$(chroot "$ROOTFS" dpkg-query -W -f '${Package}=${Version}\n' python3 python3.11 python3-venv libpython3.11-stdlib ca-certificates | tr '\n' ' ')"
chroot "$ROOTFS" apt-get clean
rm -rf "$ROOTFS"/var/lib/apt/lists/* "$ROOTFS"/var/cache/apt/* "$ROOTFS"/usr/share/doc/* \
       "$ROOTFS"/usr/share/man/* "$ROOTFS"/usr/share/info/* "$ROOTFS"/var/log/* "$ROOTFS"/tmp/* \
       "$ROOTFS"/var/cache/debconf/*-old
# debootstrap copies the build machine's resolv.conf and hostname; the container engine provides its own.
: > "$ROOTFS/etc/resolv.conf"
rm -f "$ROOTFS/etc/hostname"

ilog "importing the rootfs as ${REF}"
if ! tar --numeric-owner -C "$ROOTFS" -c . | "$DOCKER" import \
     --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
     --change 'ENV LANG=C.UTF-8' \
     --change "LABEL trainyard.base.suite=${BASE_SUITE} trainyard.base.packages=\"${PKGS% }\"" \
     --change 'CMD ["python3"]' - "$REF" >>"$LOG" 2>&1; then
  tail -5 "$LOG" >&2
  idie "docker import of the base rootfs failed (log: ${LOG})"
fi
ilog "base image ${REF} made in $(( SECONDS - START ))s ($("$DOCKER" image inspect --format '{{.Size}}' "$REF" | awk '{printf "%.0f MB", $1/1e6}'); ${PKGS% })"
printf '%s\n' "$REF"
