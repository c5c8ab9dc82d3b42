#!/bin/sh
# scripts/deps.sh: make sure the Debian packages natwrp needs are installed.
# Idempotent and quick when everything is present. As root it installs what is
# missing with apt-get; otherwise it prints the exact command and exits 1.
#
#   scripts/deps.sh            build and test dependencies (openssl included:
#                              the TLS tests make their certificates with it;
#                              mandoc and systemd: the man page and the units
#                              are checked with mandoc -T lint and
#                              systemd-analyze verify; python3-yaml: the
#                              Kubernetes manifests of docs/k8s are parsed)
#   scripts/deps.sh --nginx    also nginx (the behind-a-reverse-proxy test)
#   scripts/deps.sh --haproxy  also haproxy (the replicas-behind-a-balancer test)
#   scripts/deps.sh --browser  also chromium (the headless browser test)
#   scripts/deps.sh --jupyter  also jupyter-notebook (the Jupyter test runs a
#                              real notebook server, its kernels and terminals,
#                              through serve and agent; its Depends bring
#                              python3-ipykernel and python3-terminado)
#   scripts/deps.sh --bench    also wrk and nginx (make bench)
#   scripts/deps.sh --promtool also prometheus, for its promtool (the /metrics
#                              test checks the exposition with it)
#   scripts/deps.sh --image    also buildah and podman (make image; the image
#                              test exports it with podman) and ca-certificates
#                              (the CA bundle the image carries)
#   scripts/deps.sh --webdav   also apache2 (mod_dav, mod_dav_fs) and litmus
#                              (the WebDAV test runs litmus through natwrp)
#   scripts/deps.sh --node     also nodejs and npm (each only when its command
#                              is missing: a NodeSource node brings its own
#                              npm), then the pinned npm packages of
#                              test/apps/package-lock.json (express,
#                              socket.io, ...) into test/apps/node_modules
#                              with `npm ci` (the Express/socket.io test)
#
# The same through the environment: DEPS_NGINX=1, DEPS_HAPROXY=1, DEPS_BROWSER=1,
# DEPS_JUPYTER=1, DEPS_BENCH=1, DEPS_PROMTOOL=1, DEPS_IMAGE=1, DEPS_WEBDAV=1, DEPS_NODE=1.
# Installing nginx, haproxy, prometheus or apache2 never starts its system service (no daemon on
# :80 or :9090 is left behind): the tests and the benchmark run their own nginx,
# haproxy and apache2 on loopback, and need only promtool.
set -eu

PKGS="libuv1-dev libwslay-dev libmbedtls-dev node-llhttp pkg-config gcc make curl python3 openssl
      mandoc systemd python3-yaml"
EXTRA=""
# podman and buildah as root need nothing more (no uidmap, no fuse-overlayfs:
# their overlay storage works on the host's filesystem, and scripts/image.sh
# falls back to vfs where it does not); --no-install-recommends keeps out
# what they only recommend.
IMAGE_PKGS="buildah podman ca-certificates"

case "${DEPS_NGINX:-}" in 1|yes|true) EXTRA="$EXTRA nginx" ;; esac
case "${DEPS_HAPROXY:-}" in 1|yes|true) EXTRA="$EXTRA haproxy" ;; esac
case "${DEPS_BENCH:-}" in 1|yes|true) EXTRA="$EXTRA nginx wrk" ;; esac
case "${DEPS_BROWSER:-}" in 1|yes|true) EXTRA="$EXTRA chromium" ;; esac
case "${DEPS_JUPYTER:-}" in 1|yes|true) EXTRA="$EXTRA jupyter-notebook" ;; esac
case "${DEPS_PROMTOOL:-}" in 1|yes|true) EXTRA="$EXTRA prometheus" ;; esac
case "${DEPS_IMAGE:-}" in 1|yes|true) EXTRA="$EXTRA $IMAGE_PKGS" ;; esac
case "${DEPS_WEBDAV:-}" in 1|yes|true) EXTRA="$EXTRA apache2 litmus" ;; esac
NODE=""
case "${DEPS_NODE:-}" in 1|yes|true) NODE=1 ;; esac
for arg in "$@"; do
    case "$arg" in
        --nginx) EXTRA="$EXTRA nginx" ;;
        --haproxy) EXTRA="$EXTRA haproxy" ;;
        --browser) EXTRA="$EXTRA chromium" ;;
        --jupyter) EXTRA="$EXTRA jupyter-notebook" ;;
        --bench) EXTRA="$EXTRA nginx wrk" ;;
        --promtool) EXTRA="$EXTRA prometheus" ;;
        --image) EXTRA="$EXTRA $IMAGE_PKGS" ;;
        --webdav) EXTRA="$EXTRA apache2 litmus" ;;
        --node) NODE=1 ;;
        -h|--help) sed -n '2,38p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "deps: unknown argument $arg (try --help)" >&2; exit 2 ;;
    esac
done

if [ -n "$NODE" ]; then
    command -v node >/dev/null 2>&1 || EXTRA="$EXTRA nodejs"
    command -v npm >/dev/null 2>&1 || EXTRA="$EXTRA npm"
fi

# The npm packages the Node.js tests run, exactly as pinned in the lock
# file; again only when the installed set is not already that one.
node_apps() {
    [ -n "$NODE" ] || return 0
    apps="$(cd "$(dirname "$0")/.." && pwd)/test/apps"
    if [ -f "$apps/node_modules/.package-lock.json" ] &&
        [ ! "$apps/package-lock.json" -nt "$apps/node_modules/.package-lock.json" ]; then
        return 0
    fi
    echo "deps: npm ci in $apps"
    (cd "$apps" && npm ci --no-audit --no-fund)
}

if ! command -v dpkg >/dev/null 2>&1; then
    echo "deps: dpkg not found; this script knows Debian/Ubuntu only." >&2
    echo "deps: install: $PKGS$EXTRA (llhttp C sources: set LLHTTP_DIR=...)" >&2
    exit 1
fi

missing=""
for p in $PKGS $EXTRA; do
    case " $missing " in *" $p "*) continue ;; esac
    # dpkg -s succeeds for removed-but-configured packages too; check the state.
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing="$missing $p"
    fi
done

if [ -z "$missing" ]; then
    node_apps
    exit 0
fi

echo "deps: missing:$missing"
if [ "$(id -u)" -eq 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    # Keep package scripts from starting services (nginx or apache2 would take
    # :80, haproxy its default frontend, prometheus :9090, and keep running): a policy-rc.d that says no, only
    # while we install.
    tmp_policy=""
    case "$missing" in
        *nginx*|*haproxy*|*prometheus*|*apache2*)
            if [ ! -e /usr/sbin/policy-rc.d ]; then
                tmp_policy=/usr/sbin/policy-rc.d
                printf '#!/bin/sh\n# scripts/deps.sh: no service starts during this install\nexit 101\n' \
                    >"$tmp_policy"
                chmod 0755 "$tmp_policy"
                trap 'rm -f "$tmp_policy"' EXIT INT TERM
            fi
            ;;
    esac
    apt-get update
    # shellcheck disable=SC2086
    apt-get install -y --no-install-recommends $missing
    echo "deps: installed:$missing"
    node_apps
else
    echo "deps: run this, then try again:" >&2
    echo "  sudo apt-get update && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y$missing" >&2
    exit 1
fi
