"""f6 systemd: sd_notify without libsystemd (src/core/notify.c).

A Python AF_UNIX datagram socket stands in for systemd's NOTIFY_SOCKET (a
path, or '@name' in the abstract namespace). serve says READY=1 once it
listens, the agent once its first tunnel is up; STOPPING=1 when a drain
starts (SIGTERM); RELOADING=1 with MONOTONIC_USEC, then READY=1, around
serve's SIGHUP; WATCHDOG=1 every WATCHDOG_USEC/2 when WATCHDOG_USEC is set
(and WATCHDOG_PID, if set, is the process's own pid). Without NOTIFY_SOCKET
nothing is sent.

Absence is checked after the process has exited (anything it sent is then
already queued on our socket), or, for the watchdog, over a bounded window
of several watchdog periods."""

import os
import signal
import socket
import time

from harness import BIN, Conn, base_env, check, eq, fail

_seq = [0]


class NotifySock:
    """A datagram socket bound like systemd's; .env is NOTIFY_SOCKET."""

    def __init__(self, t, abstract=False):
        _seq[0] += 1
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        if abstract:
            name = "natwrp-test-%d-%d" % (os.getpid(), _seq[0])
            self.sock.bind("\0" + name)
            self.env = "@" + name
        else:
            # /tmp: build/test-logs/<test>/ may be longer than sun_path allows.
            self.path = "/tmp/natwrp-notify-%d-%d.sock" % (os.getpid(), _seq[0])
            if os.path.exists(self.path):
                os.unlink(self.path)
            self.sock.bind(self.path)
            self.env = self.path
        self.msgs = []

    def recv(self, timeout):
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(4096)
        except socket.timeout:
            return None
        m = data.decode()
        self.msgs.append(m)
        return m

    def wait(self, var, timeout=10.0):
        """The next message with line var (e.g. 'READY=1'), as a dict;
        messages before it are kept in self.msgs."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                fail("no %s on NOTIFY_SOCKET within %.1fs; got %r" % (var, timeout, self.msgs))
            m = self.recv(left)
            if m is not None and var in m.split("\n"):
                return dict(x.split("=", 1) for x in m.split("\n") if "=" in x)

    def drain(self):
        """Every message already queued (non-blocking)."""
        out = []
        self.sock.setblocking(False)
        try:
            while True:
                out.append(self.sock.recv(4096).decode())
        except BlockingIOError:
            pass
        self.msgs.extend(out)
        return out

    def close(self):
        self.sock.close()
        if getattr(self, "path", None) and os.path.exists(self.path):
            os.unlink(self.path)


def _free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def _serve(t, ns, extra_env=None, port=0):
    env = {"NOTIFY_SOCKET": ns.env} if ns else {}
    env.update(extra_env or {})
    return t.serve(listen="127.0.0.1:%d" % port, env=env)


def test_f6_serve_ready_once_listening_then_stopping(t):
    ns = NotifySock(t)
    try:
        port = _free_port()
        p = t.natwrp("serve", ["serve", "--listen", "127.0.0.1:%d" % port],
                     env={"NOTIFY_SOCKET": ns.env})
        ready = ns.wait("READY=1", 15)
        # READY=1 means the port takes connections now.
        c = Conn(port, timeout=5)
        c.sock.close()
        eq(ns.msgs[0].split("\n")[0], "READY=1", "the first message")
        check("STATUS" in ready, "READY=1 without a STATUS= line: %r" % ns.msgs)
        p.send(signal.SIGTERM)
        ns.wait("STOPPING=1", 10)
        eq(p.wait_exit(10), 0, "serve's exit status on SIGTERM")
        eq([m for m in ns.drain() if "READY=1" in m], [], "READY=1 after STOPPING=1")
    finally:
        ns.close()


def test_f6_serve_reload_abstract(t):
    ns = NotifySock(t, abstract=True)
    try:
        s = _serve(t, ns)
        ns.wait("READY=1", 15)
        before = time.monotonic_ns() // 1000
        s.proc.send(signal.SIGHUP)
        rel = ns.wait("RELOADING=1", 10)
        after = time.monotonic_ns() // 1000
        check("MONOTONIC_USEC" in rel, "RELOADING=1 without MONOTONIC_USEC: %r" % ns.msgs)
        usec = int(rel["MONOTONIC_USEC"])
        check(before <= usec <= after,
              "MONOTONIC_USEC=%d is not CLOCK_MONOTONIC between %d and %d" % (usec, before,
                                                                              after))
        ns.wait("READY=1", 10)
        # A second reload: the same pair again.
        s.proc.send(signal.SIGHUP)
        ns.wait("RELOADING=1", 10)
        ns.wait("READY=1", 10)
        s.proc.send(signal.SIGTERM)
        ns.wait("STOPPING=1", 10)
        eq(s.proc.wait_exit(10), 0, "serve's exit status")
    finally:
        ns.close()


def test_f6_agent_ready_when_tunnel_up(t):
    ns = NotifySock(t)
    try:
        o = t.origin("A")
        port = _free_port()
        # No serve yet: the agent retries, and says nothing to systemd.
        a = t.agent("http://127.0.0.1:%d" % port, o, env={"NOTIFY_SOCKET": ns.env}, wait=False)
        a.wait_for(r"tunnel down agent=a1 .*reconnecting", 15)
        a.wait_for(r"tunnel down agent=a1 .*reconnecting", 15, a.last_at + 1)
        eq(ns.drain(), [], "messages before any tunnel was up")
        t.serve(listen="127.0.0.1:%d" % port)
        ns.wait("READY=1", 20)
        check(a.find(r"tunnel up agent=a1") or a.wait_for(r"tunnel up agent=a1", 5),
              "READY=1 without a tunnel up")
        a.send(signal.SIGTERM)
        ns.wait("STOPPING=1", 10)
        eq(a.wait_exit(10), 0, "agent's exit status on SIGTERM")
        eq(len([m for m in ns.msgs if "READY=1" in m.split("\n")]), 1,
           "READY=1 messages (%r)" % ns.msgs)
    finally:
        ns.close()


def _count_watchdogs(ns, n, timeout):
    deadline = time.monotonic() + timeout
    got = 0
    while got < n:
        left = deadline - time.monotonic()
        if left <= 0:
            fail("%d WATCHDOG=1 within %.1fs, want %d; got %r" % (got, timeout, n, ns.msgs))
        m = ns.recv(left)
        if m is not None and "WATCHDOG=1" in m.split("\n"):
            got += 1
    return got


def test_f6_watchdog_serve_and_agent(t):
    ns_s, ns_a = NotifySock(t), NotifySock(t, abstract=True)
    try:
        o = t.origin("A")
        s = _serve(t, ns_s, {"WATCHDOG_USEC": "200000"})
        ns_s.wait("READY=1", 15)
        t0 = time.monotonic()
        _count_watchdogs(ns_s, 5, 10)
        # Every 100 ms: five take at least ~400 ms after the first.
        check(time.monotonic() - t0 >= 0.3, "5 WATCHDOG=1 in %.3fs: not every WATCHDOG_USEC/2"
              % (time.monotonic() - t0))
        t.agent(s, o, env={"NOTIFY_SOCKET": ns_a.env, "WATCHDOG_USEC": "200000"})
        ns_a.wait("READY=1", 15)
        _count_watchdogs(ns_a, 5, 10)
    finally:
        ns_s.close()
        ns_a.close()


def test_f6_watchdog_pid(t):
    """WATCHDOG_PID names the process the watchdog is for: our own pid
    (exec keeps the shell's) turns it on, another pid leaves it off."""
    ns_own, ns_other = NotifySock(t), NotifySock(t)
    try:
        env = base_env({"NOTIFY_SOCKET": ns_own.env, "WATCHDOG_USEC": "200000"})
        p = t.spawn("serve-own", ["sh", "-c", 'WATCHDOG_PID=$$ exec "$0" serve --listen '
                                  '127.0.0.1:0', BIN], env=env, natwrp=True)
        ns_own.wait("READY=1", 15)
        _count_watchdogs(ns_own, 3, 10)
        q = t.natwrp("serve-other", ["serve", "--listen", "127.0.0.1:0"],
                     env={"NOTIFY_SOCKET": ns_other.env, "WATCHDOG_USEC": "200000",
                          "WATCHDOG_PID": str(os.getpid())})
        ns_other.wait("READY=1", 15)
        # Ten watchdog periods (each 100 ms) with nothing.
        extra = ns_other.recv(1.0)
        eq(extra, None, "a message for another process's watchdog")
        q.send(signal.SIGTERM)
        eq(q.wait_exit(10), 0, "exit status")
        check(not any("WATCHDOG=1" in m for m in ns_other.msgs + ns_other.drain()),
              "WATCHDOG=1 though WATCHDOG_PID is not serve's: %r" % ns_other.msgs)
        check(p.find(r"systemd watchdog: WATCHDOG=1 every 100 ms"),
              "serve did not log its watchdog interval")
        check(not q.find(r"systemd watchdog"), "the other serve logged a watchdog")
    finally:
        ns_own.close()
        ns_other.close()


def test_f6_no_notify_socket_no_message(t):
    """NOTIFY_SOCKET unset (WATCHDOG_USEC set all the same): nothing is
    sent and no watchdog runs, whatever happens: start, tunnel up, SIGHUP,
    SIGTERM; the processes work and exit 0 as usual. A control serve with
    NOTIFY_SOCKET set, started alongside, does notify (and its watchdog
    ticks mark the time the others had to send anything)."""
    ns, ctl = NotifySock(t), NotifySock(t)
    try:
        o = t.origin("A")
        s = t.serve(env={"WATCHDOG_USEC": "200000"})
        a = t.agent(s, o, env={"WATCHDOG_USEC": "200000"})
        t.serve(label="control", env={"NOTIFY_SOCKET": ctl.env, "WATCHDOG_USEC": "200000"})
        ctl.wait("READY=1", 15)
        _count_watchdogs(ctl, 3, 10)
        m = s.proc.mark()
        s.proc.send(signal.SIGHUP)
        s.proc.wait_for(r"SIGHUP", 10, m)
        a.send(signal.SIGTERM)
        eq(a.wait_exit(10), 0, "agent's exit status")
        s.proc.send(signal.SIGTERM)
        eq(s.proc.wait_exit(10), 0, "serve's exit status")
        eq(ns.drain(), [], "messages with NOTIFY_SOCKET unset")
        check(not s.proc.find(r"systemd watchdog"), "a watchdog without NOTIFY_SOCKET (serve)")
        check(not a.find(r"systemd watchdog"), "a watchdog without NOTIFY_SOCKET (agent)")
    finally:
        ns.close()
        ctl.close()


def test_f6_bad_notify_socket_runs_on(t):
    """A NOTIFY_SOCKET that is no socket (relative, or nobody listening) is
    warned about once; the service runs and exits as usual."""
    o = t.origin("A")
    s = t.serve(env={"NOTIFY_SOCKET": "relative/notify"})
    s.proc.wait_for(r"NOTIFY_SOCKET=relative/notify: not an absolute path", 10)
    a = t.agent(s, o, env={"NOTIFY_SOCKET": "/tmp/natwrp-nobody-%d.sock" % os.getpid()})
    a.wait_for(r"NOTIFY_SOCKET=.*no such file", 10)
    a.send(signal.SIGTERM)
    eq(a.wait_exit(10), 0, "agent's exit status")
    eq(len(a.find(r"NOTIFY_SOCKET=")), 1, "warnings about NOTIFY_SOCKET")
