#!/usr/bin/env bash
# Print the base image for a server Dockerfile's BASE build argument (server.yaml `image: {base: ...}`).
#
#   servers/base/base-image.sh python <public base, e.g. python:3.11.17-slim-bookworm>
#   servers/base/base-image.sh debian <public base, e.g. debian:12.12-slim>
#
# On a normal machine that is the public image, pulled once. Where Docker reaches no registry
# (this project's CI and dev machines) the pull fails at once, and a stand-in is built here:
# Debian bookworm (the public images' own Debian), with Debian's python3 (3.11, the public Python
# image's minor) for `python`, made with debootstrap and `docker import`ed. It is cached under a tag
# holding the hash of its recipe, so it is built once per recipe (1.5-2.5 min on a busy 2-core
# machine) and reused.
set -euo pipefail

die() { echo "base-image: $*" >&2; exit 2; }
say() { echo "base-image: $*" >&2; }

kind=${1:?usage: $0 python|debian <public base image>}
public=${2:?usage: $0 python|debian <public base image>}
suite=bookworm
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
# python: Debian's python3 and the venv module (which brings pip's wheel for ensurepip). debian:
# minbase alone. `tar` is in minbase, and Tilt's live update needs it in the final image.
case "$kind" in
  python) packages=python3,python3-venv ;;
  debian) packages=ca-certificates ;;
  *) die "the base kind must be python or debian, got '$kind': fix image.base in the server's server.yaml." ;;
esac
# pip in the build must trust the same certificate authorities as this machine: on networks that
# inspect TLS, that bundle holds the proxy's CA, and the public image's bundle would not.
ca_bundle=/etc/ssl/certs/ca-certificates.crt

command -v docker >/dev/null || die "docker is not installed: install Docker (https://docs.docker.com/engine/install/), start it, and re-run make images."
docker info >/dev/null 2>&1 || die "the Docker engine is not answering (docker info failed): start it (Docker Desktop, or sudo systemctl start docker; CI: bash .ci/run), then re-run make images."

if docker image inspect "$public" >/dev/null 2>&1; then
  echo "$public"; exit 0
fi
if pull_error=$(docker pull -q "$public" 2>&1 >/dev/null); then
  echo "$public"; exit 0
fi

# The recipe: what is installed, the CA bundle, and the build steps below (comments aside).
recipe=$({ echo "$suite $packages"; cat "$ca_bundle"; sed -n '/^root=/,$p' "$0" | grep -v '^ *#'; } 2>/dev/null \
  | sha256sum | cut -c1-12)
offline=py-serving-bench/$kind-base:$suite-$recipe
say "cannot pull $public (${pull_error%%$'\n'*}); using the offline base $offline."
if docker image inspect "$offline" >/dev/null 2>&1; then
  echo "$offline"; exit 0
fi

command -v debootstrap >/dev/null || die "debootstrap is missing, and it builds the base when no registry is reachable: apt-get install debootstrap, then re-run make images."
[ "$(id -u)" = 0 ] || die "debootstrap needs root to build the offline base: run make images as root (or with sudo)."
[ -r "$ca_bundle" ] || die "$ca_bundle is missing: apt-get install ca-certificates, then re-run make images."

root=$(mktemp -d /var/tmp/$kind-base.XXXXXX)
# --one-file-system: never follow a /proc or /sys that a failed debootstrap left mounted.
trap 'umount -R "$root/proc" "$root/sys" 2>/dev/null || true; rm -rf --one-file-system "$root"' EXIT

say "building $offline with debootstrap ($suite, $packages) from $mirror: 1.5-2.5 min."
debootstrap --variant=minbase --include="$packages" "$suite" "$root" "$mirror" >"$root.log" 2>&1 || {
  tail -n 20 "$root.log" >&2; die "debootstrap failed (log above, full log $root.log): check that $mirror is reachable."
}
rm -f "$root.log"
# mktemp made the tree's top 0700, and it becomes the image's `/`: the app user must traverse it.
chmod 0755 "$root"
install -D -m 0644 "$ca_bundle" "$root$ca_bundle"
[ "$kind" = python ] && printf '[global]\ncert = %s\n' "$ca_bundle" >"$root/etc/pip.conf"
# Package caches and docs are a third of the tree; every layer of a vfs-backed build copies them.
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* "$root"/usr/share/{doc,man,info,locale}/*

tar --numeric-owner -C "$root" -c . | docker import \
  --change 'ENV LANG=C.UTF-8' \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change "CMD [\"$([ "$kind" = python ] && echo python3 || echo bash)\"]" \
  - "$offline" >/dev/null
say "built $offline."
echo "$offline"
