#!/bin/sh
# scripts/image.sh: build the natwrp container image, FROM scratch.
#
#   scripts/image.sh [BINARY]     (make image: BINARY is build/natwrp)
#
# The image holds the stripped release binary, exactly the shared libraries
# ldd reports for it and the loader, the CA bundle the agent reads
# (/etc/ssl/certs/ca-certificates.crt), /etc/passwd and /etc/group with root
# and the unprivileged user natwrp (65532:65532). No shell, no package
# manager, nothing else.
# No base image is pulled: it builds offline.
#
# It is tagged IMAGE:VERSION and IMAGE:latest (IMAGE=natwrp by default;
# VERSION is what BINARY --version says). Tool: buildah, else podman
# (scripts/deps.sh --image installs both), or IMAGE_TOOL=podman|buildah;
# none of them: exit 2.
#
# Reproducible: every file gets the time of the last commit (or
# SOURCE_DATE_EPOCH when set), owner 0:0 and a fixed mode; the build's
# --timestamp sets the image's creation time to the same, so two builds of
# one commit on one machine give the same layer digest, and the same image
# (config) id too. The summary at the end prints the size and both digests.
set -eu

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${1:-$ROOT/build/natwrp}
IMAGE=${IMAGE:-natwrp}
CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt
USER_ID=65532
MAX_BYTES=$((8 * 1024 * 1024))

die() { echo "image: $*" >&2; exit 1; }

# --- the tool ----------------------------------------------------------------
if [ -n "${IMAGE_TOOL:-}" ]; then
    TOOL=$IMAGE_TOOL
    command -v "$TOOL" >/dev/null 2>&1 || { echo "image: IMAGE_TOOL=$TOOL: not found" >&2; exit 2; }
elif command -v buildah >/dev/null 2>&1; then
    TOOL=buildah
elif command -v podman >/dev/null 2>&1; then
    TOOL=podman
else
    echo "image: neither buildah nor podman is installed (scripts/deps.sh --image installs them)" >&2
    exit 2
fi
# Their default storage (overlay) needs a kernel and filesystem that allow it;
# inside some containers only vfs works. STORAGE_DRIVER is read by both tools.
if [ -z "${STORAGE_DRIVER:-}" ] && ! $TOOL info >/dev/null 2>&1; then
    if STORAGE_DRIVER=vfs $TOOL info >/dev/null 2>&1; then
        echo "image: $TOOL's default storage does not work here; using the vfs driver"
        export STORAGE_DRIVER=vfs
    else
        $TOOL info >&2 || true
        die "$TOOL does not work on this machine (see above)"
    fi
fi

start=$(date +%s)

# --- what goes in ------------------------------------------------------------
[ -x "$BIN" ] || die "$BIN not found (make builds it)"
[ -r "$CA_BUNDLE" ] || die "$CA_BUNDLE not found (scripts/deps.sh --image installs ca-certificates)"
VERSION=$("$BIN" --version | sed -n '1s/^natwrp \([^ ]*\).*/\1/p')
[ -n "$VERSION" ] || die "$BIN --version printed no version"
if [ -z "${SOURCE_DATE_EPOCH:-}" ]; then
    SOURCE_DATE_EPOCH=$(git -C "$ROOT" log -1 --format=%ct 2>/dev/null) ||
        die "not a git checkout: set SOURCE_DATE_EPOCH (seconds since 1970) for the file times"
fi
case "$SOURCE_DATE_EPOCH" in ''|*[!0-9]*) die "SOURCE_DATE_EPOCH must be a number of seconds" ;; esac
REVISION=$(git -C "$ROOT" rev-parse HEAD 2>/dev/null || echo unknown)
# The repository declares no licence and has no public address yet: the two
# labels say so (SPDX's NOASSERTION) unless these are set.
SOURCE_URL=${IMAGE_SOURCE:-$(git -C "$ROOT" remote get-url origin 2>/dev/null || echo NOASSERTION)}
LICENSES=${IMAGE_LICENSES:-NOASSERTION}

WORK=$(mktemp -d "${TMPDIR:-/tmp}/natwrp-image.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
trap 'exit 130' INT TERM
R=$WORK/rootfs
mkdir -p "$R/usr/bin" "$R/etc/ssl/certs"

strip --strip-all -o "$R/usr/bin/natwrp" "$BIN"
chmod 0755 "$R/usr/bin/natwrp"

# ldd's lines: "libuv.so.1 => /lib/x86_64-linux-gnu/libuv.so.1 (0x...)" and
# the loader "/lib64/ld-linux-x86-64.so.2 (0x...)"; linux-vdso has no file.
# Each is copied (symlinks followed) to the path the program asks for.
libs=$(ldd "$BIN" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }')
[ -n "$libs" ] || die "ldd $BIN listed no libraries (a static binary needs none: remove this check)"
for lib in $libs; do
    mkdir -p "$R$(dirname "$lib")"
    cp -L "$lib" "$R$lib"
    chmod 0644 "$R$lib"
done
# The loader is the one that runs (PT_INTERP); the libraries are only mapped.
loader=$(ldd "$BIN" | awk '$1 ~ /^\// { print $1 }')
[ -n "$loader" ] && chmod 0755 "$R$loader"

cp -L "$CA_BUNDLE" "$R$CA_BUNDLE"
printf 'root:x:0:0:root:/root:/sbin/nologin\nnatwrp:x:%s:%s:natwrp:/nonexistent:/sbin/nologin\n' \
    "$USER_ID" "$USER_ID" >"$R/etc/passwd"
printf 'root:x:0:\nnatwrp:x:%s:\n' "$USER_ID" >"$R/etc/group"
# No /etc/nsswitch.conf: without one, glibc (2.36) looks host names up in
# "files dns" order, /etc/hosts then DNS, the two files a container runtime
# mounts; both lookups are built into libc.so.6 (glibc 2.34 and later).
chmod 0644 "$R/etc/passwd" "$R/etc/group" "$R$CA_BUNDLE"
find "$R" -type d -exec chmod 0755 {} +

cat >"$WORK/Containerfile" <<EOF
FROM scratch
COPY rootfs/ /
USER $USER_ID:$USER_ID
EXPOSE 8000
ENTRYPOINT ["/usr/bin/natwrp"]
CMD ["serve"]
EOF

# --- the build ---------------------------------------------------------------
# --timestamp: the creation time and every file's time; --layers=false: no
# cached image per instruction (podman's default); --identity-label=false: no
# label naming the tool's version, so buildah and podman give the same image.
# Nothing is RUN, so no container runtime is needed; --isolation chroot keeps
# it that way should a RUN step be added (an OCI runtime may not work where
# this builds, e.g. inside a container).
echo "image: building $IMAGE:$VERSION with $TOOL (file times: @$SOURCE_DATE_EPOCH)"
$TOOL build --quiet --timestamp "$SOURCE_DATE_EPOCH" --identity-label=false \
    --isolation chroot --layers=false -f "$WORK/Containerfile" \
    --label "org.opencontainers.image.title=natwrp" \
    --label "org.opencontainers.image.description=NAT-traversal web reverse proxy: natwrp serve (public host) and natwrp agent (next to the service)" \
    --label "org.opencontainers.image.version=$VERSION" \
    --label "org.opencontainers.image.revision=$REVISION" \
    --label "org.opencontainers.image.source=$SOURCE_URL" \
    --label "org.opencontainers.image.licenses=$LICENSES" \
    -t "$IMAGE:$VERSION" -t "$IMAGE:latest" "$WORK" >/dev/null
end=$(date +%s)

# --- summary -----------------------------------------------------------------
# The image as a registry gets it (an OCI layout: gzip layer, config,
# manifest), to measure and to name its digests.
$TOOL push --quiet "$IMAGE:$VERSION" "oci:$WORK/oci:$VERSION" >/dev/null
blob() { echo "$WORK/oci/blobs/sha256/${1#sha256:}"; }
manifest=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["manifests"][0]["digest"])' \
    "$WORK/oci/index.json")
set -- $(python3 -c 'import json,sys; m=json.load(open(sys.argv[1]))
print(m["config"]["digest"], " ".join(l["digest"] for l in m["layers"]))' "$(blob "$manifest")")
config=$1; shift
[ $# -eq 1 ] || die "the image has $# layers, want 1"
gz_bytes=$(wc -c <"$(blob "$1")")
tar_bytes=$(gzip -dc "$(blob "$1")" | wc -c)
layer=sha256:$(gzip -dc "$(blob "$1")" | sha256sum | cut -d' ' -f1)
echo "image: $IMAGE:$VERSION and $IMAGE:latest built in $((end - start)) s"
echo "image: size: layer $tar_bytes bytes ($((tar_bytes / 1024)) KiB), gzip $gz_bytes bytes ($((gz_bytes / 1024)) KiB)"
echo "image: layer $layer (uncompressed), image id $config"
echo "image: manifest $manifest (OCI, gzip layer)"
if [ "$tar_bytes" -gt "$MAX_BYTES" ]; then
    die "the layer is over 8 MiB ($tar_bytes bytes)"
fi
