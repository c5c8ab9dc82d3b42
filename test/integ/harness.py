"""harness.py: helpers for the natwrp integration tests.

A test is a function test_NAME(t) in test/integ/test_*.py; run.py calls it in
its own process with a fresh Ctx `t`. Through `t` a test starts the test
origin (test/origin.py), `natwrp serve` and `natwrp agent`; every child's
stdout and stderr go, line by line, to build/test-logs/<test>/<label>.log and
to an in-memory list that Proc.wait_for() watches. Waits are event driven
(a reader thread signals a condition variable on each new line) and every
wait has a timeout. Ctx.cleanup() always runs: it stops every child
(SIGTERM, then SIGKILL), and fails the test if a natwrp process did not exit
0 on SIGTERM or if any log holds a sanitizer report.

Nothing here sleeps to synchronise; the only timed loops are RSS sampling
and the bounded /events poll (after the matching origin log line was seen),
where there is no event to wait on.
"""

import hashlib
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "test"))
import origin as origin_mod  # noqa: E402  (pattern generator shared with the origin)

pattern_chunks = origin_mod.pattern_chunks
pattern_sha256 = origin_mod.pattern_sha256

BIN = os.path.abspath(os.path.join(ROOT, os.environ.get("NATWRP_BIN", "build/asan/natwrp")))
LOGROOT = os.path.join(ROOT, "build", "test-logs")
ORIGIN = os.path.join(ROOT, "test", "origin.py")

SANITIZER_RE = re.compile(
    r"ERROR: AddressSanitizer|ERROR: LeakSanitizer|LeakSanitizer|runtime error:"
    r"|SUMMARY: (Address|UndefinedBehavior|Leak)Sanitizer")

# Settings natwrp reads from the environment: never inherit them.
AGENT_VARS = ("AGENT_ID", "REMOTE_URL", "LOCAL_URL", "PING_INTERVAL", "POOL_SIZE", "WINDOW",
              "CONNECT_TIMEOUT", "LOG_LEVEL", "PORT", "RESPONSE_TIMEOUT", "MAX_HEAD", "GRACE",
              "CONN_TOKEN", "AUTH_TOKEN", "AUTH_RULE", "ALLOW_AGENT", "MAX_CONN", "BALANCE",
              "TLS_CERT", "TLS_KEY", "TRUST_PROXY", "CA_FILE", "TLS_INSECURE", "LOCAL_CA_FILE",
              "LOCAL_INSECURE", "MAX_LOCAL_CONNS", "LOCAL_QUEUE", "MAX_STREAMS", "MAX_CONNS",
              "MAX_LOCAL_PIPES", "LOCAL_QUEUE_TIMEOUT", "BODY_TIMEOUT", "HEAD_TIMEOUT",
              "IDLE_TIMEOUT", "QUEUE_TIMEOUT", "MAX_TUNNELS", "MAX_AGENT_TUNNELS",
              "MAX_HEADERS", "MAX_URL", "PRESERVE_HOST", "REWRITE_LOCATION", "ROUTES",
              "AUTH_BASIC", "AUTH_BASIC_FILE", "DOMAIN", "TOKENS_FILE", "ROUTE_HOLD",
              "ADMIN_LISTEN", "ADMIN_TOKEN", "ACCESS_LOG", "LOG_FORMAT", "INSPECT",
              "INSPECT_SECRETS", "NOTIFY_SOCKET", "WATCHDOG_USEC")

TUNNEL_PATH = "/_natwrp/tunnel"


class TestFailure(AssertionError):
    pass


def fail(msg):
    raise TestFailure(msg)


def check(cond, msg):
    if not cond:
        raise TestFailure(msg)


def eq(got, want, what):
    if got != want:
        raise TestFailure("%s: got %r, want %r" % (what, got, want))


def timed(seconds):
    """Decorator: per-test timeout for run.py (default 60 s)."""
    def deco(fn):
        fn.timeout = seconds
        return fn
    return deco


def base_env(extra=None):
    env = {k: v for k, v in os.environ.items() if k not in AGENT_VARS}
    env["ASAN_OPTIONS"] = "detect_leaks=1:abort_on_error=0"
    env["UBSAN_OPTIONS"] = "print_stacktrace=1:halt_on_error=1"
    env["PYTHONUNBUFFERED"] = "1"
    # A short drain on SIGTERM, so that cleanup (5 s) never waits for the
    # 30 s default; tests of the drain itself set their own.
    env["GRACE"] = "2"
    if extra:
        env.update(extra)
    return env


# --------------------------------------------------------------------------
# Processes and their logs
# --------------------------------------------------------------------------

# Notified after any child logs a line (for wait_any).
ANY_LINE = threading.Condition()


def wait_any(watches, timeout=10.0):
    """watches: [(Proc, regex, since)]. Waits until one of them logs a
    matching line; returns (Proc, match)."""
    deadline = time.monotonic() + timeout
    with ANY_LINE:
        while True:
            for p, pattern, since in watches:
                found = p.find(pattern, since)
                if found:
                    return p, found[0]
            left = deadline - time.monotonic()
            if left <= 0:
                fail("none of %s logged a match within %.1fs" % (
                    ", ".join("%s /%s/" % (p.label, pat) for p, pat, _ in watches), timeout))
            ANY_LINE.wait(left)


class Proc:
    """A child process whose merged stdout/stderr is logged and watched."""

    def __init__(self, ctx, label, argv, env=None, cwd=None, natwrp=False):
        self.ctx = ctx
        self.label = label
        self.argv = argv
        self.natwrp = natwrp
        self.logpath = os.path.join(ctx.logdir, label + ".log")
        self.lines = []
        self.cond = threading.Condition()
        self.eof = False
        self.signalled = None  # signal we sent to end it, if any
        self.exit_expected = False  # the test waited for the exit itself
        self.last_at = -1  # index of the line the last wait_for matched
        self._log = open(self.logpath, "a", buffering=1, errors="replace")
        self._log.write("# %s\n" % " ".join(argv))
        self.popen = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            env=env if env is not None else base_env(), cwd=cwd or ctx.logdir)
        self.pid = self.popen.pid
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        f = self.popen.stdout
        for raw in iter(f.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            self._log.write(line + "\n")
            with self.cond:
                self.lines.append(line)
                self.cond.notify_all()
            with ANY_LINE:
                ANY_LINE.notify_all()
        with self.cond:
            self.eof = True
            self.cond.notify_all()

    # -- watching the log --------------------------------------------------

    def mark(self):
        """Index of the next line; pass as since= to only see newer lines."""
        with self.cond:
            return len(self.lines)

    def wait_for(self, pattern, timeout=10.0, since=0):
        """Wait until a line at index >= since matches pattern (a regex).
        Returns the match. Fails on timeout or when the process exits first."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        i = since
        with self.cond:
            while True:
                while i < len(self.lines):
                    m = rx.search(self.lines[i])
                    if m:
                        self.last_at = i  # index of the matching line
                        return m
                    i += 1
                if self.eof:
                    self.popen.wait()
                    fail("%s exited (status %s) before logging /%s/; last lines:\n%s"
                         % (self.label, self.popen.returncode, pattern, self.tail_text()))
                left = deadline - time.monotonic()
                if left <= 0:
                    fail("%s: no line matching /%s/ within %.1fs; last lines:\n%s"
                         % (self.label, pattern, timeout, self.tail_text()))
                self.cond.wait(left)

    def find(self, pattern, since=0):
        rx = re.compile(pattern)
        with self.cond:
            return [m for m in (rx.search(x) for x in self.lines[since:]) if m]

    def count(self, pattern, since=0):
        return len(self.find(pattern, since))

    def text(self):
        with self.cond:
            return "\n".join(self.lines)

    def tail_text(self, n=15):
        with self.cond:
            return "\n".join("    | " + x for x in self.lines[-n:])

    # -- lifetime ----------------------------------------------------------

    def alive(self):
        return self.popen.poll() is None

    def wait_exit(self, timeout=10.0):
        """Wait for exit and for the log to be fully read; returns the status.
        The test then owns the exit status: cleanup no longer judges it."""
        self.exit_expected = True
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            fail("%s (pid %d) still running after %.1fs" % (self.label, self.pid, timeout))
        self._reader.join(5)
        return self.popen.returncode

    def send(self, sig):
        if self.alive():
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass

    def kill(self):
        """SIGKILL (simulates a crash); waits for it to be gone."""
        self.signalled = signal.SIGKILL
        self.send(signal.SIGCONT)
        self.send(signal.SIGKILL)
        return self.wait_exit(10)

    def stop(self):
        self.send(signal.SIGSTOP)

    def cont(self):
        self.send(signal.SIGCONT)

    def terminate(self, timeout=5.0):
        """SIGTERM and wait; SIGKILL after timeout. Returns (status, problem):
        problem is None or a string when it did not exit 0 in time."""
        if not self.alive():
            self._reader.join(5)
            rc = self.popen.returncode
            if self.natwrp and rc != 0 and self.signalled is None and not self.exit_expected:
                return rc, "%s exited on its own with status %s" % (self.label, rc)
            return rc, None
        self.signalled = signal.SIGTERM
        self.send(signal.SIGCONT)
        self.send(signal.SIGTERM)
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.send(signal.SIGKILL)
            self.popen.wait(10)
            self._reader.join(5)
            return self.popen.returncode, "%s did not exit within %.0fs of SIGTERM" % (
                self.label, timeout)
        self._reader.join(5)
        rc = self.popen.returncode
        if self.natwrp and rc != 0:
            return rc, "%s exited with status %s after SIGTERM (want 0)" % (self.label, rc)
        return rc, None

    def close_log(self):
        try:
            self._log.close()
        except Exception:
            pass

    def rss_kib(self):
        """VmRSS of the process in KiB (None once it is gone)."""
        try:
            with open("/proc/%d/status" % self.pid) as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1])
        except OSError:
            return None
        return None


class Origin:
    def __init__(self, proc, port, name):
        self.proc, self.port, self.name = proc, port, name
        self.url = "http://127.0.0.1:%d" % port

    def events(self):
        r = http_request(self.port, "GET", "/events", timeout=5)
        eq(r.status, 200, "origin /events status")
        return r.json()

    def wait_event(self, event, path, since=0, timeout=10.0):
        """Wait for an origin event on its log (event-driven), then confirm it
        through /events with a bounded poll."""
        self.proc.wait_for(r"event %s path=%s$" % (re.escape(event), re.escape(path)),
                           timeout, since)
        deadline = time.monotonic() + timeout
        while True:
            if any(e["event"] == event and e["path"] == path for e in self.events()):
                return
            if time.monotonic() > deadline:
                fail("origin /events never listed %s %s" % (event, path))
            time.sleep(0.05)


class Serve:
    def __init__(self, proc, port, host="127.0.0.1", scheme="http"):
        self.proc, self.port, self.host, self.scheme = proc, port, host, scheme
        hp = "[%s]" % host if ":" in host else host
        self.url = "%s://%s:%d" % (scheme, hp, port)
        # For TLS: the name the test certificates are issued to.
        self.name_url = "%s://localhost:%d" % (scheme, port)

    def wait_tunnel_open(self, agent_id, since=0, timeout=15.0):
        m = self.proc.wait_for(r"tunnel open tun=(\d+) agent=%s\b" % re.escape(agent_id),
                               timeout, since)
        return int(m.group(1))

    def wait_tunnel_closed(self, agent_id, since=0, timeout=15.0):
        return self.proc.wait_for(r"tunnel closed tun=\d+ agent=%s\b.*reason=" %
                                  re.escape(agent_id), timeout, since)


class Ctx:
    """Per-test context: starts children, owns their cleanup."""

    def __init__(self, name):
        self.name = name
        self.logdir = os.path.join(LOGROOT, name)
        shutil.rmtree(self.logdir, ignore_errors=True)
        os.makedirs(self.logdir)
        self.procs = []
        self._labels = {}

    def label(self, base):
        n = self._labels.get(base, 0) + 1
        self._labels[base] = n
        return base if n == 1 else "%s-%d" % (base, n)

    def spawn(self, label, argv, env=None, cwd=None, natwrp=False):
        p = Proc(self, self.label(label), argv, env=env, cwd=cwd, natwrp=natwrp)
        self.procs.append(p)
        return p

    def natwrp(self, label, args, env=None, cwd=None):
        check(os.access(BIN, os.X_OK), "natwrp binary %s not built (make asan)" % BIN)
        return self.spawn(label, [BIN] + list(args), env=base_env(env), cwd=cwd, natwrp=True)

    def run_natwrp(self, label, args, env=None, timeout=10.0, cwd=None):
        """Run natwrp to completion; returns (status, output text)."""
        p = self.natwrp(label, args, env=env, cwd=cwd)
        rc = p.wait_exit(timeout)
        return rc, p.text()

    # -- the three kinds of process -----------------------------------------

    def origin(self, name="A", tls=None):
        """tls: (cert, key) to serve HTTPS; its url is then https://localhost:PORT."""
        argv = [sys.executable, ORIGIN, "--port", "0", "--name", name]
        if tls:
            argv += ["--tls-cert", tls[0], "--tls-key", tls[1]]
        p = self.spawn("origin-" + name, argv)
        m = p.wait_for(r"^origin listening (\d+)$", 10)
        o = Origin(p, int(m.group(1)), name)
        if tls:
            o.url = "https://localhost:%d" % o.port
        return o

    def serve(self, *args, listen="127.0.0.1:0", label="serve", env=None):
        p = self.natwrp(label, ["serve", "--listen", listen] + list(args), env=env)
        m = p.wait_for(r"listening on (https?)://(\[[^\]]+\]|[^\s:]+):(\d+)", 15)
        host = m.group(2).strip("[]")
        return Serve(p, int(m.group(3)), host, m.group(1))

    def serve_multi(self, listens, *args, label="serve", env=None):
        """serve with several --listen values; returns one Serve per listener,
        in the order they were given (each log line names its scheme)."""
        argv = ["serve"]
        for l in listens:
            argv += ["--listen", l]
        p = self.natwrp(label, argv + list(args), env=env)
        out = []
        since = 0
        for _ in listens:
            m = p.wait_for(r"listening on (https?)://(\[[^\]]+\]|[^\s:]+):(\d+)", 15, since)
            since = p.last_at + 1
            out.append(Serve(p, int(m.group(3)), m.group(2).strip("[]"), m.group(1)))
        return out

    def agent(self, serve, local, agent_id="a1", env=None, args=(), wait=True, label="agent",
              cwd=None):
        """Start an agent configured through the environment. serve is a Serve
        (or a remote URL string); local an Origin (or a LOCAL_URL string).
        With wait, waits for 'tunnel up' on the agent and 'tunnel open' on serve."""
        remote = serve.url if isinstance(serve, Serve) else serve
        if isinstance(serve, Serve) and serve.scheme == "https":
            remote = serve.name_url  # verified against the certificate's name
        local_url = local.url if isinstance(local, Origin) else local
        e = {"AGENT_ID": agent_id, "REMOTE_URL": remote, "LOCAL_URL": local_url}
        if env:
            e.update(env)
        since = serve.proc.mark() if isinstance(serve, Serve) else 0
        p = self.natwrp(label, ["agent"] + list(args), env=e, cwd=cwd)
        if wait:
            p.wait_for(r"tunnel up agent=%s\b" % re.escape(agent_id), 15)
            if isinstance(serve, Serve):
                serve.wait_tunnel_open(agent_id, since)
        return p

    def stack(self, serve_args=(), agent_env=None, agent_id="a1"):
        """Origin A + serve + one connected agent."""
        o = self.origin("A")
        s = self.serve(*serve_args)
        a = self.agent(s, o, agent_id=agent_id, env=agent_env)
        return o, s, a

    # -- the end -------------------------------------------------------------

    def cleanup(self):
        """Stop everything; return a list of problems (empty when clean)."""
        problems = []
        for p in reversed(self.procs):
            _, problem = p.terminate(5.0 if p.natwrp else 3.0)
            if problem and p.natwrp:
                problems.append(problem)
        for p in self.procs:
            p.close_log()
        problems.extend(self.sanitizer_reports())
        return problems

    def sanitizer_reports(self):
        out = []
        for p in self.procs:
            if not p.natwrp:
                continue
            with p.cond:
                lines = list(p.lines)
            for i, line in enumerate(lines):
                if SANITIZER_RE.search(line):
                    out.append("sanitizer report in %s:\n%s" % (
                        p.logpath, "\n".join("    | " + x for x in lines[i:i + 25])))
                    break
        return out


# --------------------------------------------------------------------------
# HTTP over raw sockets
# --------------------------------------------------------------------------

class Response:
    def __init__(self):
        self.version = None
        self.status = None
        self.reason = None
        self.headers = []      # ordered (name, value) pairs, names as sent
        self.body = b""
        self.complete = False  # body framing was satisfied
        self.framing = None    # "length", "chunked", "close" or "none"
        self.content_length = None

    def header(self, name):
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None

    def header_all(self, name):
        return [v for k, v in self.headers if k.lower() == name.lower()]

    def json(self):
        try:
            return json.loads(self.body.decode())
        except ValueError:
            fail("response body is not JSON (status %s): %r" % (self.status, self.body[:300]))

    def text(self):
        return self.body.decode("utf-8", "replace")

    def __repr__(self):
        return "<Response %s %s %s body=%d bytes complete=%s>" % (
            self.version, self.status, self.reason, len(self.body), self.complete)


class Conn:
    """One client connection to serve, for exact control of the bytes."""

    def __init__(self, port, host="127.0.0.1", timeout=10.0, rcvbuf=None):
        fam = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(fam, socket.SOCK_STREAM)
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(timeout)
        self.sock.connect((host, port))
        self.port = port
        self.host = host
        self.timeout = timeout
        self.buf = b""
        self.closed_by_peer = False

    def send(self, data):
        if isinstance(data, str):
            data = data.encode("latin-1")
        self.sock.sendall(data)

    def request(self, method, target, headers=(), body=None, host=None):
        """Send one request. headers: list of (name, value); Host is added
        unless present; Content-Length is added for a bytes body unless a
        Content-Length or Transfer-Encoding header is given."""
        hdrs = list(headers)
        names = {k.lower() for k, _ in hdrs}
        if "host" not in names:
            hdrs.insert(0, ("Host", host or "127.0.0.1:%d" % self.port))
        if body is not None and "content-length" not in names and \
                "transfer-encoding" not in names:
            hdrs.append(("Content-Length", str(len(body))))
        head = "%s %s HTTP/1.1\r\n" % (method, target)
        head += "".join("%s: %s\r\n" % (k, v) for k, v in hdrs) + "\r\n"
        self.send(head.encode("latin-1") + (body or b""))

    def _fill(self):
        try:
            b = self.sock.recv(1 << 16)
        except socket.timeout:
            fail("timed out after %.0fs waiting for response bytes from port %d"
                 % (self.timeout, self.port))
        except ConnectionResetError:
            b = b""
        if not b:
            self.closed_by_peer = True
            return False
        self.buf += b
        return True

    def _line(self):
        while b"\r\n" not in self.buf:
            if len(self.buf) > 1 << 20:
                fail("response line too long")
            if not self._fill():
                return None
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _exact(self, n, sink):
        """Move n bytes to sink (a callable). Returns bytes moved (< n on EOF)."""
        got = 0
        while got < n:
            if not self.buf and not self._fill():
                return got
            take = self.buf[: n - got]
            self.buf = self.buf[len(take):]
            sink(take)
            got += len(take)
        return got

    def read_head(self, allow_eof=False):
        """Read one response head (interim 1xx included). Returns Response."""
        r = Response()
        line = self._line()
        if line is None:
            if allow_eof:
                return None
            fail("connection closed before a response status line")
        m = re.match(rb"^(HTTP/\d\.\d) (\d{3})(?: (.*))?$", line)
        check(m, "bad status line %r" % line)
        r.version = m.group(1).decode()
        r.status = int(m.group(2))
        r.reason = (m.group(3) or b"").decode("latin-1")
        while True:
            line = self._line()
            check(line is not None, "connection closed inside a response head")
            if line == b"":
                break
            k, sep, v = line.partition(b":")
            check(sep, "bad header line %r" % line)
            r.headers.append((k.decode("latin-1"), v.strip().decode("latin-1")))
        return r

    def read_response(self, method="GET", sink=None, interim=False, allow_eof=False):
        """Read one full response. Interim 1xx heads are skipped unless
        interim=True (then the 1xx head itself is returned). The body goes to
        sink(bytes) when given (r.body then stays empty), else to r.body.
        A body cut short leaves r.complete False."""
        while True:
            r = self.read_head(allow_eof=allow_eof)
            if r is None:
                return None
            if 100 <= r.status < 200 and r.status != 101:
                if interim:
                    return r
                continue
            break
        return self.read_body(r, method, sink)

    def read_body(self, r, method="GET", sink=None):
        """Read the body that belongs to head r (see read_response)."""
        parts = []
        if sink is None:
            sink = parts.append
        te = (r.header("Transfer-Encoding") or "").lower()
        cl = r.header("Content-Length")
        if method == "HEAD" or r.status in (204, 304) or r.status == 101:
            r.framing = "none"
            r.complete = True
            if cl is not None:
                r.content_length = int(cl)
        elif "chunked" in te:
            r.framing = "chunked"
            r.complete = self._read_chunked(sink)
        elif cl is not None:
            r.framing = "length"
            r.content_length = int(cl)
            r.complete = self._exact(r.content_length, sink) == r.content_length
        else:
            r.framing = "close"
            while self.buf or self._fill():
                sink(self.buf)
                self.buf = b""
            r.complete = True
        r.body = b"".join(parts)
        return r

    def _read_chunked(self, sink):
        while True:
            line = self._line()
            if line is None:
                return False
            try:
                size = int(line.split(b";")[0].strip(), 16)
            except ValueError:
                fail("bad chunk size line %r" % line)
            if size == 0:
                while True:
                    t = self._line()
                    if t is None:
                        return False
                    if t == b"":
                        return True
            if self._exact(size, sink) < size:
                return False
            crlf = self._line()
            if crlf is None:
                return False
            check(crlf == b"", "chunk not followed by CRLF: %r" % crlf[:40])

    def wait_closed(self, timeout=10.0):
        """True when the peer closes (EOF) within timeout, leftover bytes ignored."""
        self.sock.settimeout(timeout)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                b = self.sock.recv(1 << 16)
            except socket.timeout:
                return False
            except ConnectionResetError:
                return True
            if not b:
                return True
        return False

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def reset(self):
        """Abort with a TCP RST (SO_LINGER 0). A plain close cannot be seen by
        a peer whose receive window is full: the FIN waits behind unsent
        data. shutdown() first wakes any thread blocked in sendall, which
        would otherwise keep the socket open."""
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.close()


def http_request(port, method, target, headers=(), body=None, timeout=10.0, host="127.0.0.1",
                 sink=None):
    """One request on a fresh connection; returns the Response."""
    c = Conn(port, host=host, timeout=timeout)
    try:
        c.request(method, target, headers, body)
        return c.read_response(method, sink=sink)
    finally:
        c.close()


def get(serve_or_port, target, **kw):
    port = serve_or_port.port if isinstance(serve_or_port, (Serve, Origin)) else serve_or_port
    return http_request(port, "GET", target, **kw)


def echo(serve, target="/echo", method="GET", headers=(), body=None, timeout=10.0):
    """Request an /echo-style target; check 200 and return the parsed JSON."""
    r = http_request(serve.port, method, target, headers, body, timeout=timeout)
    eq(r.status, 200, "%s %s status (body %r)" % (method, target, r.body[:200]))
    return r.json()


def hdr(echo_obj, name):
    """All values of a header the origin received, in order."""
    return [v for k, v in echo_obj["headers"] if k.lower() == name.lower()]


# --------------------------------------------------------------------------
# curl
# --------------------------------------------------------------------------

class CurlResult:
    def __init__(self, rc, out, err):
        self.rc, self.out, self.err = rc, out, err.decode("utf-8", "replace")

    def __repr__(self):
        return "<curl rc=%d out=%d bytes err=%r>" % (self.rc, len(self.out), self.err[-300:])


def curl(*args, timeout=20, stdin=None):
    """curl -sS --max-time timeout ARGS; returns CurlResult(rc, stdout bytes, stderr)."""
    cmd = ["curl", "-sS", "--max-time", str(timeout)] + [str(a) for a in args]
    try:
        p = subprocess.run(cmd, input=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           timeout=timeout + 10)
    except subprocess.TimeoutExpired:
        fail("curl did not finish: %s" % " ".join(cmd))
    return CurlResult(p.returncode, p.stdout, p.stderr)


def curl_status(res):
    """Status code written by -w '%{stderr}CODE=%{http_code}'."""
    m = re.search(r"CODE=(\d+)", res.err)
    return int(m.group(1)) if m else None


def curl_download_sha256(url, timeout=120, extra=()):
    """Stream a download through sha256; returns (rc, status, length, hex)."""
    cmd = ["curl", "-sS", "--max-time", str(timeout), "-w", "%{stderr}CODE=%{http_code}\n"]
    cmd += list(extra) + [url]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    h = hashlib.sha256()
    n = 0
    errbuf = []
    et = threading.Thread(target=lambda: errbuf.append(p.stderr.read()), daemon=True)
    et.start()
    while True:
        b = p.stdout.read(1 << 20)
        if not b:
            break
        h.update(b)
        n += len(b)
    try:
        rc = p.wait(timeout + 10)
    except subprocess.TimeoutExpired:
        p.kill()
        fail("curl download did not finish")
    et.join(5)
    res = CurlResult(rc, b"", errbuf[0] if errbuf else b"")
    return rc, curl_status(res), n, h.hexdigest(), res.err


# --------------------------------------------------------------------------
# TLS
# --------------------------------------------------------------------------

PKI_DIR = os.path.join(ROOT, "build", "pki")


def pki():
    """The throwaway test PKI (test/mkpki.sh), made once per build dir.
    Returns a function name -> path, e.g. pki()("ca.pem")."""
    if not os.path.exists(os.path.join(PKI_DIR, "done")):
        r = subprocess.run(["sh", os.path.join(ROOT, "test", "mkpki.sh"), PKI_DIR],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)
        check(r.returncode == 0, "test/mkpki.sh failed: %s" % r.stdout.decode()[-500:])
    return lambda name: os.path.join(PKI_DIR, name)


def tls_context(cafile=None, verify=True):
    import ssl
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if verify:
        ctx.load_verify_locations(cafile)
    else:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


class TlsConn(Conn):
    """A Conn over TLS (server name "localhost" unless given)."""

    def __init__(self, port, cafile=None, server_name="localhost", timeout=10.0, verify=True):
        super().__init__(port, timeout=timeout)
        self.sock = tls_context(cafile, verify).wrap_socket(self.sock,
                                                            server_hostname=server_name)

    def peer_cert_der(self):
        return self.sock.getpeercert(binary_form=True)


def pem_to_der(path):
    import ssl
    with open(path) as f:
        text = f.read()
    first = text[: text.index("-----END CERTIFICATE-----") + len("-----END CERTIFICATE-----")]
    return ssl.PEM_cert_to_DER_cert(first + "\n")


# --------------------------------------------------------------------------
# Misc
# --------------------------------------------------------------------------

def sample_rss(procs, seconds, interval=0.1, during=None):
    """Sample VmRSS (KiB) of each Proc for `seconds`; returns {label: max}.
    If during is a callable it runs in a thread meanwhile; its exception, if
    any, is raised after sampling."""
    peaks = {p.label: 0 for p in procs}
    err = []
    th = None
    if during:
        def run():
            try:
                during()
            except BaseException as e:  # noqa: B902 - reported below
                err.append(e)
        th = threading.Thread(target=run, daemon=True)
        th.start()
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        for p in procs:
            v = p.rss_kib()
            if v is not None:
                peaks[p.label] = max(peaks[p.label], v)
        time.sleep(interval)
    if th:
        th.join(60)
        check(not th.is_alive(), "background request did not finish")
        if err:
            raise err[0]
    return peaks


def write_env_file(path, text):
    with open(path, "w") as f:
        f.write(text)
    return path


WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def ws_accept(key):
    import base64
    return base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()


def tunnel_upgrade(port, agent_id="raw1", protocol="natwrp.1", key="dGhlIHNhbXBsZSBub25jZQ==",
                   version="13", extra=(), drop=(), method="GET"):
    """Send a hand-made tunnel upgrade to serve; returns (Conn, Response head).
    drop: header names to leave out; None values in extra are skipped."""
    hdrs = [("Upgrade", "websocket"), ("Connection", "Upgrade"),
            ("Sec-WebSocket-Key", key), ("Sec-WebSocket-Version", version),
            ("Sec-WebSocket-Protocol", protocol), ("X-Natwrp-Agent", agent_id)]
    hdrs = [(k, v) for k, v in hdrs if k not in drop and v is not None] + list(extra)
    c = Conn(port)
    c.request(method, TUNNEL_PATH, hdrs)
    r = c.read_head()
    if r.status != 101:
        c.read_body(r, method)
    return c, r
