"""f6 install: `make install` / `make uninstall` (PREFIX, DESTDIR) and the
systemd units (dist/systemd/), which `systemd-analyze verify` accepts with
no message, and whose hardening `systemd-analyze security` rates OK.

The first test builds the optimised binary if it is missing (make install
depends on it), hence its longer timeout."""

import os
import re
import shutil
import stat
import subprocess
import tempfile

from harness import ROOT, check, eq, fail, timed

UNITS = ("natwrp-serve.service", "natwrp-agent@.service")


def _make(*args, timeout=900):
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "DESTDIR",
                                                           "PREFIX")}
    p = subprocess.run(["make", "-C", ROOT] + list(args), capture_output=True, text=True,
                       timeout=timeout, env=env)
    if p.returncode != 0:
        fail("make %s: status %d\n%s%s" % (" ".join(args), p.returncode, p.stdout[-3000:],
                                           p.stderr[-3000:]))
    return p


def _files(root):
    out = set()
    for d, _, fs in os.walk(root):
        for f in fs:
            out.add(os.path.relpath(os.path.join(d, f), root))
    return out


def _mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


@timed(900)
def test_f6_install_uninstall_destdir(t):
    dest = tempfile.mkdtemp(prefix="natwrp-destdir-")
    try:
        _make("install", "DESTDIR=" + dest)
        want = {
            "usr/local/bin/natwrp": 0o755,
            "usr/local/share/man/man1/natwrp.1": 0o644,
            "usr/local/lib/systemd/system/natwrp-serve.service": 0o644,
            "usr/local/lib/systemd/system/natwrp-agent@.service": 0o644,
            "usr/local/share/doc/natwrp/natwrp.env.example": 0o644,
        }
        eq(_files(dest), set(want), "files installed under DESTDIR")
        for rel, mode in want.items():
            eq(oct(_mode(os.path.join(dest, rel))), oct(mode), "mode of " + rel)
        # The optimised build (not the sanitizer one), and it runs.
        p = subprocess.run([os.path.join(dest, "usr/local/bin/natwrp"), "--version"],
                           capture_output=True, text=True, timeout=10)
        eq(p.returncode, 0, "installed natwrp --version status")
        check("natwrp" in p.stdout, "natwrp --version printed %r" % p.stdout)
        with open(os.path.join(ROOT, "build", "natwrp"), "rb") as a, \
                open(os.path.join(dest, "usr/local/bin/natwrp"), "rb") as b:
            check(a.read() == b.read(), "the installed binary is not build/natwrp")
        # ExecStart names where the binary is once installed (PREFIX, not DESTDIR).
        for u in UNITS:
            text = open(os.path.join(dest, "usr/local/lib/systemd/system", u)).read()
            check(re.search(r"^ExecStart=/usr/local/bin/natwrp (serve|agent)$", text, re.M),
                  "%s: ExecStart is not /usr/local/bin/natwrp:\n%s" % (u, text))
        _make("uninstall", "DESTDIR=" + dest)
        eq(_files(dest), set(), "files left under DESTDIR after make uninstall")
        # Idempotent: a second uninstall is fine.
        _make("uninstall", "DESTDIR=" + dest)
    finally:
        shutil.rmtree(dest, ignore_errors=True)


def _analyze(*args, manpath):
    env = dict(os.environ, MANPATH=manpath)
    return subprocess.run(["systemd-analyze"] + list(args), capture_output=True, text=True,
                          timeout=60, env=env, cwd="/")


@timed(900)
def test_f6_units_verify(t):
    """Installed with PREFIX in a temporary directory, so that ExecStart and
    the man page (Documentation=man:natwrp(1)) exist where the units say."""
    check(shutil.which("systemd-analyze"), "systemd-analyze is not installed (scripts/deps.sh)")
    prefix = tempfile.mkdtemp(prefix="natwrp-prefix-")
    try:
        _make("install", "PREFIX=" + prefix)
        unitdir = os.path.join(prefix, "lib/systemd/system")
        manpath = os.path.join(prefix, "share/man")
        # An instance of the agent's template too (%i filled in).
        inst = os.path.join(prefix, "natwrp-agent@home.service")
        shutil.copy(os.path.join(unitdir, "natwrp-agent@.service"), inst)
        for path in [os.path.join(unitdir, u) for u in UNITS] + [inst]:
            p = _analyze("verify", path, manpath=manpath)
            eq((p.returncode, (p.stdout + p.stderr).strip()), (0, ""),
               "systemd-analyze verify " + os.path.basename(path))
        for path in (os.path.join(unitdir, UNITS[0]), inst):
            p = _analyze("security", "--offline=yes", path, manpath=manpath)
            m = re.search(r"Overall exposure level for \S+: ([0-9.]+)", p.stdout + p.stderr)
            check(m, "systemd-analyze security printed no level:\n%s" % (p.stdout + p.stderr))
            check(float(m.group(1)) <= 2.0, "%s: exposure %s, want <= 2.0:\n%s" % (
                os.path.basename(path), m.group(1), p.stdout))
        # What the check is worth: a misspelt key is reported.
        bad = os.path.join(prefix, "natwrp-bad.service")
        with open(bad, "w") as f:
            f.write(open(os.path.join(unitdir, UNITS[0])).read().replace(
                "NoNewPrivileges=yes", "NoNewPrivilegez=yes"))
        p = _analyze("verify", bad, manpath=manpath)
        check("NoNewPrivilegez" in p.stdout + p.stderr, "a bad key passed verify")
        # Type=notify, a watchdog, restart on failure, no restart on a bad setting.
        for u in UNITS:
            text = open(os.path.join(unitdir, u)).read()
            for line in ("Type=notify", "Restart=on-failure", "RestartPreventExitStatus=2",
                         "NoNewPrivileges=yes", "ProtectSystem=strict", "PrivateTmp=yes",
                         "DynamicUser=yes"):
                check(re.search("^" + re.escape(line) + "$", text, re.M),
                      "%s lacks %s" % (u, line))
            check(re.search(r"^WatchdogSec=\S+", text, re.M), "%s: no WatchdogSec" % u)
        serve = open(os.path.join(unitdir, UNITS[0])).read()
        check(re.search(r"^CapabilityBoundingSet=CAP_NET_BIND_SERVICE$", serve, re.M),
              "serve: CapabilityBoundingSet is not CAP_NET_BIND_SERVICE alone")
        check(re.search(r"^EnvironmentFile=-/etc/natwrp/serve.env$", serve, re.M),
              "serve: no /etc/natwrp/serve.env")
        agent = open(os.path.join(unitdir, UNITS[1])).read()
        check(re.search(r"^CapabilityBoundingSet=$", agent, re.M), "agent: capabilities left")
        check(re.search(r"^EnvironmentFile=/etc/natwrp/%i.env$", agent, re.M),
              "agent: no /etc/natwrp/%i.env")
        _make("uninstall", "PREFIX=" + prefix)
        os.unlink(inst)
        os.unlink(bad)
        eq(_files(prefix), set(), "files left after make uninstall")
    finally:
        shutil.rmtree(prefix, ignore_errors=True)
