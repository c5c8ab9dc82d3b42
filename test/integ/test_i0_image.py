"""i0 image: the container image `make image` builds (scripts/image.sh).

Running containers needs privileges a CI machine may not give, so these tests
check the image itself. The first builds it (under a test name, never the
user's natwrp:latest), reads it as a registry would get it (an OCI layout:
config and layer tar) and checks what is in it: exactly the stripped binary,
ldd's libraries and the loader, the CA bundle, /etc/passwd and /etc/group; no
shell and no package manager; owner 0:0 and the commit's time on every entry;
the user, port, entrypoint, command and labels; the size bound; then builds
it again from nothing and compares the layer digest (and the image id).

The second exports the image's filesystem (podman create + podman export)
into a directory and runs `natwrp serve` and `natwrp agent` from it under
`chroot --userspec=65532:65532`, with the test origin on the host's loopback:
serve on $PORT (the image's CMD), an agent configured through environment
variables that reaches serve by a host name (the /etc/hosts a container
runtime mounts), and an agent reading /.env (its working directory) that
verifies a wss:// serve against the exported CA bundle: refused before the
test CA is appended to the bundle, up after. Requests go through both; every
process runs as the image's user inside the tree, and exits 0 on SIGTERM.

These processes run the image's release binary, not the ASan build: their
exit statuses are checked here. Skips (with "skip: ...") where neither podman
nor buildah is installed and scripts/deps.sh --image cannot install them."""

import gzip
import json
import os
import shutil
import socket
import subprocess
import tarfile
import threading

from harness import ROOT, TlsConn, base_env, check, eq, fail, get, pki, timed

MAX_BYTES = 8 * 1024 * 1024
UID = 65532
BIN = os.path.join(ROOT, "build", "natwrp")
CA_BUNDLE = "etc/ssl/certs/ca-certificates.crt"
LABELS = ("title", "version", "source", "licenses", "description")
NO_SUCH = ("sh", "bash", "dash", "ash", "busybox", "apt", "apt-get", "dpkg", "dpkg-deb", "rpm",
           "apk", "microdnf", "dnf", "yum")


def _tool():
    """podman or buildah (podman preferred: it exports a container); None
    when neither is there, after trying scripts/deps.sh --image."""
    for attempt in (0, 1):
        for name in ("podman", "buildah"):
            if shutil.which(name):
                return name
        if attempt == 0 and os.geteuid() == 0:
            subprocess.run([os.path.join(ROOT, "scripts", "deps.sh"), "--image"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=900)
    return None


def _run(argv, timeout=120, **kw):
    p = subprocess.run(argv, capture_output=True, timeout=timeout, **kw)
    if p.returncode != 0:
        fail("%s: status %d\n%s%s" % (" ".join(argv), p.returncode,
                                      p.stdout.decode(errors="replace")[-3000:],
                                      p.stderr.decode(errors="replace")[-3000:]))
    return p.stdout.decode(errors="replace")


def _make_image(image):
    """make image IMAGE=image; returns its output (the summary lines)."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("MAKEFLAGS", "MFLAGS", "IMAGE", "SOURCE_DATE_EPOCH")}
    return _run(["make", "-C", ROOT, "image", "IMAGE=" + image], timeout=900, env=env)


def _version():
    out = _run([BIN, "--version"])
    return out.split()[1]


def _rmi(tool, image):
    """Remove both tags (and so the image); quiet, for finally blocks."""
    tags = [image + ":latest"]
    try:
        tags.append(image + ":" + _version())
    except Exception:
        pass  # no binary: the build failed before tagging anything
    subprocess.run([tool, "rmi", "-f"] + tags, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, timeout=120)


def _oci(tool, image, dest):
    """The image as an OCI layout in dest; returns (config, layer_path,
    layer_digest) with the config as parsed JSON."""
    _run([tool, "push", image + ":latest", "oci:" + dest + ":latest"])
    with open(os.path.join(dest, "index.json")) as f:
        index = json.load(f)

    def blob(digest):
        return os.path.join(dest, "blobs", "sha256", digest.split(":", 1)[1])

    with open(blob(index["manifests"][0]["digest"])) as f:
        manifest = json.load(f)
    with open(blob(manifest["config"]["digest"])) as f:
        config = json.load(f)
    eq(len(manifest["layers"]), 1, "layers in the image")
    return config, blob(manifest["layers"][0]["digest"]), manifest["config"]["digest"]


def _export(tool, image, dest):
    """The image's filesystem in dest (podman create + podman export; with
    buildah alone, a working container's mount)."""
    os.makedirs(dest)
    os.chmod(dest, 0o755)  # the image's user must be able to walk its /
    if tool == "podman":
        ctr = _run(["podman", "create", image + ":latest"]).strip()
        try:
            exp = subprocess.Popen(["podman", "export", ctr], stdout=subprocess.PIPE)
            _run(["tar", "-C", dest, "-xf", "-"], stdin=exp.stdout)
            eq(exp.wait(120), 0, "podman export status")
        finally:
            subprocess.run(["podman", "rm", "-f", ctr], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, timeout=120)
    else:
        ctr = _run(["buildah", "from", "--pull=never", image + ":latest"]).strip()
        try:
            mnt = _run(["buildah", "mount", ctr]).strip()
            _run(["tar", "-C", mnt, "-cf", dest + ".tar", "."])
            _run(["tar", "-C", dest, "-xf", dest + ".tar"])
            os.unlink(dest + ".tar")
        finally:
            subprocess.run(["buildah", "rm", ctr], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, timeout=120)


def _ldd_files():
    """The files the image must hold for the binary: ldd's libraries and the
    loader, as relative paths."""
    out = []
    for line in _run(["ldd", BIN]).splitlines():
        f = line.split()
        if len(f) >= 3 and f[1] == "=>" and f[2].startswith("/"):
            out.append(f[2].lstrip("/"))
        elif f and f[0].startswith("/"):
            out.append(f[0].lstrip("/"))
    check(out, "ldd %s listed no library" % BIN)
    return out


def _summary(out, what):
    for line in out.splitlines():
        if line.startswith("image: " + what):
            return line
    fail("make image printed no 'image: %s' line:\n%s" % (what, out[-2000:]))


def _skip_without_tool():
    tool = _tool()
    if tool is None:
        print("skip: neither podman nor buildah is installed, and scripts/deps.sh --image "
              "could not install them")
    return tool


@timed(900)
def test_image_contents_size_reproducible(t):
    tool = _skip_without_tool()
    if tool is None:
        return
    image = "natwrp-test-i0-%d" % os.getpid()
    work = os.path.join(t.logdir, "oci")
    try:
        out1 = _make_image(image)
        layer_line = _summary(out1, "layer ")
        size_line = _summary(out1, "size: ")
        config, layer_path, config_digest = _oci(tool, image, work)

        # The size bound, as make image reports it and as the layer really is.
        with open(layer_path, "rb") as f:
            raw = f.read()
        tar_bytes = len(gzip.decompress(raw))
        check(("layer %d bytes" % tar_bytes) in size_line,
              "make image's size line %r does not give the layer's %d bytes" % (size_line,
                                                                                tar_bytes))
        check(tar_bytes <= MAX_BYTES, "layer is %d bytes, over 8 MiB" % tar_bytes)
        print("image: layer %d bytes, gzip %d bytes" % (tar_bytes, len(raw)))

        # Configuration.
        c = config["config"]
        eq(c.get("User"), "%d:%d" % (UID, UID), "User")
        eq(sorted(c.get("ExposedPorts", {})), ["8000/tcp"], "ExposedPorts")
        eq(c.get("Entrypoint"), ["/usr/bin/natwrp"], "Entrypoint")
        eq(c.get("Cmd"), ["serve"], "Cmd")
        labels = c.get("Labels") or {}
        for k in LABELS:
            check(labels.get("org.opencontainers.image." + k),
                  "label org.opencontainers.image.%s missing: %r" % (k, labels))
        eq(labels["org.opencontainers.image.version"], _version(), "version label")
        eq(config.get("os"), "linux", "os")

        # Contents: exactly these files, root's, with the commit's time.
        epoch = int(_run(["git", "-C", ROOT, "log", "-1", "--format=%ct"]).strip())
        libs = _ldd_files()
        loader = [f for f in libs if "ld-linux" in f]
        modes = {"usr/bin/natwrp": 0o755, "etc/passwd": 0o644, "etc/group": 0o644,
                 CA_BUNDLE: 0o644}
        modes.update({f: 0o755 if f in loader else 0o644 for f in libs})
        got = set()
        names = []
        with tarfile.open(layer_path, "r:gz") as tf:
            for m in tf.getmembers():
                name = m.name[2:] if m.name.startswith("./") else m.name
                names.append(name)
                eq((m.uid, m.gid), (0, 0), "owner of %s" % name)
                eq(int(m.mtime), epoch, "time of %s (the last commit's)" % name)
                check(os.path.basename(name) not in NO_SUCH, "the image holds %s" % name)
                if m.isfile():
                    got.add(name)
                    eq(oct(m.mode & 0o7777), oct(modes.get(name, -1)), "mode of %s" % name)
                else:
                    check(m.isdir(), "%s is neither a file nor a directory" % name)
                    eq(oct(m.mode & 0o7777), oct(0o755), "mode of %s/" % name)
            eq(names, sorted(names), "layer entries in name order")
            eq(sorted(got), sorted(modes), "files in the image")
            passwd = tf.extractfile("etc/passwd").read().decode()
            group = tf.extractfile("etc/group").read().decode()
            nat = tf.extractfile("usr/bin/natwrp").read()
        check(any(l.split(":")[2:4] == [str(UID), str(UID)] for l in passwd.splitlines()),
              "/etc/passwd has no user %d: %r" % (UID, passwd))
        check(any(l.split(":")[2] == str(UID) for l in group.splitlines()),
              "/etc/group has no group %d: %r" % (UID, group))
        check(b".symtab" not in nat, "usr/bin/natwrp is not stripped")
        check(os.path.getsize(BIN) > len(nat), "usr/bin/natwrp is not smaller than build/natwrp")

        # Reproducible: remove it, build it again, same layer (and config).
        _rmi(tool, image)
        shutil.rmtree(work)
        out2 = _make_image(image)
        config2, layer_path2, config_digest2 = _oci(tool, image, work)
        eq(_summary(out2, "layer "), layer_line, "second build's digests")
        eq(config2["rootfs"]["diff_ids"], config["rootfs"]["diff_ids"], "layer digest")
        eq(config_digest2, config_digest, "image id (config digest)")
        print(layer_line)
    finally:
        _rmi(tool, image)


def _free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def _check_user(p, tree):
    """p runs as the image's user, inside the tree."""
    with open("/proc/%d/status" % p.pid) as f:
        status = dict(l.split(":", 1) for l in f.read().splitlines() if ":" in l)
    eq(status["Uid"].split(), [str(UID)] * 4, "%s Uid" % p.label)
    eq(status["Gid"].split(), [str(UID)] * 4, "%s Gid" % p.label)
    eq(os.readlink("/proc/%d/root" % p.pid), os.path.realpath(tree), "%s root" % p.label)


def _nxdomain_dns(addr):
    """A DNS server on addr:53 that answers every query "no such name", as a
    real resolver would for a name only /etc/hosts knows; None when the port
    cannot be bound."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.bind((addr, 53))
    except OSError:
        s.close()
        return None

    def serve():
        while True:
            try:
                q, peer = s.recvfrom(512)
            except OSError:
                return
            if len(q) < 12:
                continue
            # Same id and question, QR and RA set, RD copied, rcode 3.
            s.sendto(q[:2] + bytes([0x81 | (q[2] & 1), 0x83]) + q[4:6] + bytes(6) + q[12:], peer)

    threading.Thread(target=serve, daemon=True).start()
    return s


def _stop(p):
    rc, problem = p.terminate(10)
    check(problem is None, problem or "")
    eq(rc, 0, "%s exit status after SIGTERM" % p.label)


@timed(600)
def test_image_serve_agent_chroot(t):
    tool = _skip_without_tool()
    if tool is None:
        return
    if not shutil.which("chroot"):
        print("skip: no chroot command")
        return
    image = "natwrp-test-i0-%d" % os.getpid()
    tree = os.path.join(t.logdir, "rootfs")
    try:
        _make_image(image)
        _export(tool, image, tree)
    finally:
        _rmi(tool, image)
    for sh in ("bin/sh", "usr/bin/sh"):
        check(not os.path.lexists(os.path.join(tree, sh)), "the exported tree has /" + sh)

    # What a container runtime mounts: /etc/hosts (a name for the host's
    # loopback, as --add-host or hostAliases give) and /etc/resolv.conf,
    # here naming a DNS server that knows no name: the image has no
    # nsswitch.conf, and glibc must still ask /etc/hosts first.
    with open(os.path.join(tree, "etc", "hosts"), "w") as f:
        f.write("127.0.0.1 localhost\n127.0.0.1 natwrp-i0.test\n")
    dns = None
    for last in range(53, 60):
        dns = dns or _nxdomain_dns("127.0.0.%d" % last)
    if dns:
        with open(os.path.join(tree, "etc", "resolv.conf"), "w") as f:
            f.write("nameserver %s\noptions timeout:1 attempts:1\n" % dns.getsockname()[0])
    else:
        print("note: port 53 is taken on 127.0.0.53-59: the host's resolv.conf is used")
        if os.path.exists("/etc/resolv.conf"):
            shutil.copy("/etc/resolv.conf", os.path.join(tree, "etc", "resolv.conf"))
    # serve's certificate and key, readable by the image's user only.
    p = pki()
    os.makedirs(os.path.join(tree, "etc", "natwrp"))
    for name in ("chain.pem", "server.key"):
        dst = os.path.join(tree, "etc", "natwrp", name)
        shutil.copy(p(name), dst)
        os.chown(dst, UID, UID)
        os.chmod(dst, 0o600)

    def run(label, args, env):
        argv = ["chroot", "--userspec=%d:%d" % (UID, UID), tree, "/usr/bin/natwrp"] + args
        return t.spawn(label, argv, env=base_env(env))

    token = "i0-image-token"
    o = t.origin("A")

    # serve as the image runs it (CMD ["serve"]): its port from $PORT.
    port = _free_port()
    s1 = run("serve-port", ["serve"], {"PORT": str(port), "CONN_TOKEN": token})
    s1.wait_for(r"listening on http://\S+:%d\b" % port, 15)
    # serve with TLS, for the agent that checks the CA bundle.
    s2 = run("serve-tls", ["serve", "--listen", "127.0.0.1:0", "--tls-cert",
                           "/etc/natwrp/chain.pem", "--tls-key", "/etc/natwrp/server.key"],
             {"CONN_TOKEN": token})
    tls_port = int(s2.wait_for(r"listening on https://127\.0\.0\.1:(\d+)", 15).group(1))

    # An agent configured through its environment, reaching serve by a name
    # that only the tree's /etc/hosts knows.
    a1 = run("agent-env", ["agent"], {"AGENT_ID": "i0-env", "LOCAL_URL": o.url,
                                      "REMOTE_URL": "http://natwrp-i0.test:%d" % port,
                                      "CONN_TOKEN": token})
    a1.wait_for(r"tunnel up agent=i0-env\b", 15)
    r = get(port, "/echo/env")
    eq(r.status, 200, "GET through serve ($PORT) and the env-configured agent")
    eq(r.json()["name"], "A", "origin name")

    # An agent reading ./.env (the working directory is / in the image).
    with open(os.path.join(tree, ".env"), "w") as f:
        f.write("# a mounted settings file\nAGENT_ID=i0-dotenv\nREMOTE_URL=https://localhost:%d\n"
                "LOCAL_URL=%s\nCONN_TOKEN=%s\n" % (tls_port, o.url, token))
    # The image's bundle does not know the test CA: refused.
    a2 = run("agent-dotenv-noca", ["agent"], {})
    a2.wait_for(r"certificate verify failed", 15)
    check(not a2.find(r"tunnel up"), "a tunnel came up without the test CA in the bundle")
    _check_user(a2, tree)
    _stop(a2)
    # With the test CA appended to the exported bundle: verified, up.
    with open(os.path.join(tree, CA_BUNDLE), "a") as f, open(p("ca.pem")) as ca:
        f.write(ca.read())
    a3 = run("agent-dotenv", ["agent"], {})
    a3.wait_for(r"tunnel up agent=i0-dotenv remote=wss://localhost:%d\b" % tls_port, 15)
    c = TlsConn(tls_port, cafile=p("ca.pem"))
    try:
        c.request("GET", "/echo/tls")
        r = c.read_response()
    finally:
        c.close()
    eq(r.status, 200, "GET through the TLS serve and the .env-configured agent")
    eq(r.json()["path"], "/echo/tls", "path the origin saw")

    for proc in (s1, s2, a1, a3):
        _check_user(proc, tree)
    for proc in (a1, a3, s1, s2):
        _stop(proc)
    if dns:
        dns.close()
