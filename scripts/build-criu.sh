#!/usr/bin/env bash
# Builds CRIU and a crun linked against it, from Debian's sources at the versions in
# scripts/criu-version and scripts/crun-version (the one place each is named; crun's is
# Debian 12's own package version, its upstream tarball with Debian's patches), into
# /opt/warren/criu/<version>/ and /opt/warren/crun/<version>/, where `warren serve` finds them
# first: runc sandboxes pause, resume and fork through them. Debian 12's crun is built without
# CRIU, and its CRIU (3.17) fails `criu check` on current kernels. Skips what is already there.
# Run as root.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
criu_version="$(tr -d '[:space:]' < "$here/criu-version")"
crun_version="$(tr -d '[:space:]' < "$here/crun-version")"
criu_dest="/opt/warren/criu/$criu_version"
crun_dest="/opt/warren/crun/$crun_version"
# CRIU archives a sandbox's tmpfs mounts (/dev/shm: memory) with `tar --gzip`, ~25 MB/s here;
# Warren puts this `gzip` first on the PATH it gives crun: zstd at its fastest level, which
# reads gzip too (gzip itself where zstd is missing). Outside the data dir: CRIU runs tar as
# the sandbox's root.
mkdir -p "$criu_dest/shims"
cat > "$criu_dest/shims/gzip" <<'SHIM'
#!/bin/sh
# Written by Warren's scripts/build-criu.sh: CRIU's tmpfs archives through zstd.
command -v zstd >/dev/null 2>&1 || exec /bin/gzip "$@"
case " $* " in
  *" -d "*|*" --decompress "*) exec zstd -q -d -c ;;
  *) exec zstd -q -1 -T0 -c ;;
esac
SHIM
chmod 0755 "$criu_dest/shims" "$criu_dest/shims/gzip"
if [ -x "$criu_dest/sbin/criu" ] && [ -x "$crun_dest/bin/crun" ]; then
  exit 0
fi
# The tarballs' sha256, as Debian's pool serves them.
declare -A sums=(
  ["criu_4.2.1.orig.tar.xz"]=29ec0ee09e296479fe7048c80980e8ef1d0684d0b0204c2b101dfea19f6725b9
  ["crun_1.8.1.orig.tar.xz"]=01b68269d94e5fe11106a9b14c2f144be03b16ec798951f4efa6aa16ba9da29a
  ["crun_1.8.1-1+deb12u1.debian.tar.xz"]=4688a1fea2d19c6e2e38f5bad8c9c5f85be4d6033eb91dbb241c413e647e59e0
)
deps=(build-essential pkg-config curl xz-utils libprotobuf-c-dev protobuf-c-compiler protobuf-compiler
  libprotobuf-dev python3-protobuf libnl-3-dev libnet1-dev libcap-dev libbsd-dev libaio-dev
  libgnutls28-dev libnftables-dev uuid-dev libdrm-dev libsystemd-dev libseccomp-dev libyajl-dev
  libselinux1-dev libapparmor-dev go-md2man)
missing=()
for p in "${deps[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "==> apt-get install ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
fetch() { # package, tarball
  local url="http://deb.debian.org/debian/pool/main/${1:0:1}/$1/$2"
  curl -fsSL -o "$scratch/$2" "$url" || { echo "build-criu.sh: fetching $url failed" >&2; exit 1; }
  echo "${sums[$2]}  $scratch/$2" | sha256sum -c --quiet - \
    || { echo "build-criu.sh: $2 does not match its sha256" >&2; exit 1; }
  tar -C "$scratch" -xf "$scratch/$2"
}
start=$(date +%s)
if [ ! -x "$criu_dest/sbin/criu" ]; then
  echo "==> building criu $criu_version (about a minute)"
  fetch criu "criu_$criu_version.orig.tar.xz"
  (cd "$scratch/criu-$criu_version" \
    && make -s -j"$(nproc)" criu lib >"$scratch/criu.log" 2>&1 \
    && make -s PREFIX="$criu_dest" LIBDIR="$criu_dest/lib" SKIP_PIP_INSTALL=1 \
         install-criu install-lib >>"$scratch/criu.log" 2>&1) \
    || { tail -30 "$scratch/criu.log" >&2; exit 1; }
fi
if [ ! -x "$crun_dest/bin/crun" ]; then
  echo "==> building crun $crun_version with CRIU (about 30 s)"
  upstream="${crun_version%%-*}"
  fetch crun "crun_$upstream.orig.tar.xz"
  fetch crun "crun_$crun_version.debian.tar.xz"
  src="$scratch/crun-$upstream"
  # Debian's patches, in its order: the crun Debian 12 ships, with CRIU.
  while read -r p; do
    [ -n "$p" ] && [ "${p#\#}" = "$p" ] && patch -s -d "$src" -p1 < "$scratch/debian/patches/$p"
  done < "$scratch/debian/patches/series"
  # CRIU's pkg-config names include/criu, where crun includes <criu/criu.h>: its parent
  # too (Debian's own libcriu-dev has it in /usr/include, on every compiler's path).
  # The release tarball's build reads the commit from a header git would have made.
  [ -f "$src/git-version.h" ] || echo '#define GIT_VERSION "debian-'"$crun_version"'"' > "$src/git-version.h"
  (cd "$src" \
    && PKG_CONFIG_PATH="$criu_dest/lib/pkgconfig" ./configure -q --prefix="$crun_dest" \
         CFLAGS="-O2 -I$criu_dest/include" LDFLAGS="-Wl,-rpath,$criu_dest/lib" >"$scratch/crun.log" 2>&1 \
    && make -s -j"$(nproc)" crun >>"$scratch/crun.log" 2>&1) \
    || { tail -30 "$scratch/crun.log" >&2; exit 1; }
  install -D -m 0755 "$src/crun" "$crun_dest/bin/crun"
fi
echo "==> criu and crun built in $(( $(date +%s) - start )) s: $("$crun_dest/bin/crun" --version | tail -1)"
"$criu_dest/sbin/criu" check >/dev/null 2>&1 || echo "build-criu.sh: note: 'criu check' fails on this kernel; runc pause will not work" >&2
