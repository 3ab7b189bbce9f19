#!/usr/bin/env bash
# Builds a minimal OCI image of the Warren server and pushes it to a registry:
#
#   scripts/warren-image.sh BINARY REF [--insecure]
#
# BINARY is a built `warren` (target/release/warren, or target/debug/warren for tests); REF is
# where to push it, e.g. registry.example.com/warren/warren:v1 (a registry on 127.0.0.1 or
# localhost, or with --insecure any, is pushed to over plain HTTP). Prints REF@sha256:... last,
# the reference to install (deploy/kubernetes/, README's "Install on a cluster").
#
# The image holds the binary (stripped of its symbols and debug information) at
# /usr/local/bin/warren, the glibc libraries `ldd` names for it with their loader, the CA
# certificates, an /etc/passwd naming root and `warren` (65532), and nothing else: no shell.
# Its entrypoint is `warren`, its command `serve`. Built with umoci and pushed with skopeo, as
# k8s-up.sh builds its pause image; needs neither Docker nor root (files are root's in it).
set -euo pipefail
if [ $# -lt 2 ]; then
  echo "usage: $0 BINARY REF [--insecure]" >&2
  exit 2
fi
binary=$1
ref=$2
insecure=${3:-}
[ -x "$binary" ] || { echo "warren-image.sh: $binary is not an executable" >&2; exit 1; }
for tool in umoci skopeo strip ldd; do
  command -v "$tool" >/dev/null || { echo "warren-image.sh: needs $tool" >&2; exit 1; }
done
tls=true
case "$ref" in
  127.*|localhost[:/]*) tls=false ;;
esac
[ "$insecure" = --insecure ] && tls=false
start=$(date +%s%N)

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
umoci init --layout "$work/oci" >/dev/null
umoci new --image "$work/oci:warren" >/dev/null
umoci unpack --rootless --image "$work/oci:warren" "$work/bundle" >/dev/null
root="$work/bundle/rootfs"
mkdir -p "$root/usr/local/bin" "$root/etc/ssl/certs" "$root/tmp" "$root/var/lib/warren"
chmod 1777 "$root/tmp"
# The debug build is ~170 MB, ~70 MB of it symbols and DWARF: a stripped copy goes in.
strip -o "$root/usr/local/bin/warren" "$binary"
chmod 0755 "$root/usr/local/bin/warren"
# The shared libraries it links (libc, libm, libgcc_s) and the loader, at the paths ldd shows
# (the loader's path is the one written in the binary), each the file its symlinks end at. A
# static binary has none.
libs="$(ldd "$binary" 2>/dev/null | awk '{for (i = 1; i <= NF; i++) if ($i ~ /^\//) print $i}' | sort -u)" || true
for lib in $libs; do
  mkdir -p "$root$(dirname "$lib")"
  cp -L "$lib" "$root$lib"
done
if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
  cp -L /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/"
fi
printf 'root:x:0:0:root:/root:/sbin/nologin\nwarren:x:65532:65532:warren:/var/lib/warren:/sbin/nologin\n' > "$root/etc/passwd"
printf 'root:x:0:\nwarren:x:65532:\n' > "$root/etc/group"
# The files are this user's (root when run as root; --rootless maps them to root otherwise).
umoci repack --image "$work/oci:warren" "$work/bundle" >/dev/null
umoci config --image "$work/oci:warren" \
  --config.entrypoint /usr/local/bin/warren --config.cmd serve \
  --config.env PATH=/usr/local/bin --config.env WARREN_DATA_DIR=/var/lib/warren \
  --config.workingdir / --config.exposedports 8080/tcp \
  --config.label org.opencontainers.image.title=warren \
  --config.label "org.opencontainers.image.version=$("$binary" --version 2>/dev/null | awk '{print $NF}')" \
  >/dev/null
umoci gc --layout "$work/oci" >/dev/null

# skopeo keeps its auth and temporary files under HOME; the caller's registry credentials
# (~/.docker/config.json, $REGISTRY_AUTH_FILE) are used when set.
skopeo --insecure-policy copy --quiet --dest-tls-verify="$tls" \
  --digestfile "$work/digest" "oci:$work/oci:warren" "docker://$ref"
digest="$(cat "$work/digest")"
size=$(du -sk "$work/oci/blobs" | awk '{print $1}')
ms=$(( ($(date +%s%N) - start) / 1000000 ))
echo "==> pushed $ref ($((size / 1024)) MiB of blobs) in $((ms / 1000)).$((ms % 1000 / 100)) s" >&2
echo "$ref@$digest"
