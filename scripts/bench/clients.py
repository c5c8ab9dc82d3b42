#!/usr/bin/env python3
"""scripts/bench/clients.py: the load clients of `make bench` that wrk and
curl cannot play. Standard library only; loopback URLs only. Each prints one
JSON object on stdout (the last line) and exits 0 on success, 1 on an error
(wrong status, short body, a connection that failed).

  hold   --target HOST:PORT --control HOST:PORT --n N [--pid NAME=PID ...]
         Opens N connections to TARGET (serve), each sending one
         "GET /hold" that the origin (scripts/bench/origin.py) does not
         answer until told. Waits until the origin (CONTROL, reached
         directly) holds them all, samples VmRSS of each --pid (and its
         open fds), releases them through the origin's /_release, checks
         every answer is 200 "released", closes the connections and samples
         RSS again. Raises RLIMIT_NOFILE; if N does not fit under the hard
         limit it uses the largest N that does and says so ("n_capped").
  stream --url URL --out FILE
         Reads a chunked /stream response (origin.py), one "t=NS;" marker
         per chunk, and writes each chunk's delay in microseconds
         (time.time_ns() on arrival minus the origin's time.time_ns() when
         it wrote the chunk; same machine, same clock) to FILE, one a line.
  bulk   --url URL --secs S [--bytes B] [--rate MBPS]
         Downloads URL again and again on one keep-alive connection,
         reading as fast as it can (with --rate: no faster than MBPS MB/s
         on average), for S seconds (the transfer under way at the deadline
         is cut). Checks status 200 and, with --bytes, the Content-Length.
         Reports MB/s (10^6 bytes/s).
  stall  --url URL --secs S
         Sends one GET, reads the response head (must be 200), prints
         "stalled" and then never reads again, for S seconds or until
         SIGTERM, then closes.
"""
import argparse
import asyncio
import json
import os
import re
import resource
import signal
import socket
import sys
import time
from urllib.parse import urlsplit


def out(obj):
    print(json.dumps(obj), flush=True)


def hostport(s):
    h, p = s.rsplit(":", 1)
    return h, int(p)


def parse_url(url):
    u = urlsplit(url)
    if u.scheme != "http":
        raise SystemExit(f"clients.py: only http:// URLs ({url})")
    path = u.path or "/"
    if u.query:
        path += "?" + u.query
    return u.hostname, u.port or 80, path


def rss_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def nfds(pid):
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


def raise_nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        soft = hard
    return soft, hard


# --- a minimal blocking HTTP/1.1 response reader -------------------------
class Resp:
    def __init__(self, sock):
        self.sock = sock
        self.buf = b""

    def _more(self, n=65536):
        d = self.sock.recv(n)
        if not d:
            raise ConnectionError("connection closed")
        self.buf += d
        return d

    def head(self):
        while b"\r\n\r\n" not in self.buf:
            if len(self.buf) > 65536:
                raise ValueError("response head too large")
            self._more()
        h, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = h.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ")[1])
        hdrs = {}
        for ln in lines[1:]:
            k, _, v = ln.partition(":")
            hdrs[k.strip().lower()] = v.strip()
        return status, hdrs


def connect(host, port, timeout=30):
    s = socket.create_connection((host, port), timeout=timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def get(sock, host, port, path):
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: natwrp-bench\r\n\r\n".encode())


# --- stream ----------------------------------------------------------------
MARK = re.compile(rb"t=(\d+);")


def cmd_stream(a):
    host, port, path = parse_url(a.url)
    s = connect(host, port)
    s.settimeout(60)
    get(s, host, port, path)
    r = Resp(s)
    status, hdrs = r.head()
    if status != 200:
        out({"error": f"status {status}"})
        return 1
    if "chunked" not in hdrs.get("transfer-encoding", ""):
        out({"error": f"expected a chunked response, got headers {hdrs}"})
        return 1
    delays = []
    body = b""
    done = False
    while not done:
        # Decode every complete chunk in the buffer; the arrival time is the
        # time of the recv() that completed it.
        now = time.time_ns()
        while True:
            i = r.buf.find(b"\r\n")
            if i < 0:
                break
            size = int(r.buf[:i].split(b";")[0], 16)
            if len(r.buf) < i + 2 + size + 2:
                break
            data = r.buf[i + 2:i + 2 + size]
            r.buf = r.buf[i + 2 + size + 2:]
            if size == 0:
                done = True
                break
            body += data
            while True:
                m = MARK.search(body)
                if not m:
                    break
                delays.append((now - int(m.group(1))) / 1000.0)
                body = body[m.end():]
        if not done:
            r._more()
            continue
    s.close()
    with open(a.out, "w") as f:
        for d in delays:
            f.write(f"{d:.1f}\n")
    srt = sorted(delays)

    def pct(p):
        return srt[min(len(srt) - 1, int(round(p / 100.0 * (len(srt) - 1))))] / 1000.0 if srt else None

    res = {"chunks": len(delays), "p50_ms": pct(50), "p99_ms": pct(99), "max_ms": srt[-1] / 1000.0 if srt else None}
    if a.expect and len(delays) != a.expect:
        res["error"] = f"got {len(delays)} chunks, want {a.expect}"
        out(res)
        return 1
    out(res)
    return 0


# --- bulk ------------------------------------------------------------------
def cmd_bulk(a):
    host, port, path = parse_url(a.url)
    deadline = time.monotonic() + a.secs
    buf = bytearray(1 << 20)
    total = 0
    done = 0
    cut = False
    t0 = time.monotonic()
    s = None
    err = None
    try:
        while time.monotonic() < deadline:
            if s is None:
                s = connect(host, port)
            s.settimeout(max(0.05, deadline - time.monotonic()))
            get(s, host, port, path)
            r = Resp(s)
            status, hdrs = r.head()
            clen = int(hdrs.get("content-length", "-1"))
            if status != 200 or clen < 0 or (a.bytes and clen != a.bytes):
                err = f"status {status}, content-length {clen}"
                break
            got = len(r.buf)
            r.buf = b""
            while got < clen:
                left = deadline - time.monotonic()
                if left <= 0:
                    cut = True
                    break
                s.settimeout(left)
                try:
                    n = s.recv_into(buf, min(len(buf), clen - got))
                except socket.timeout:
                    cut = True
                    break
                if n == 0:
                    err = f"connection closed after {got} of {clen} bytes"
                    break
                got += n
                if a.rate:
                    # Paced: no faster than RATE MB/s on average.
                    ahead = (total + got) / (a.rate * 1e6) - (time.monotonic() - t0)
                    if ahead > 0:
                        time.sleep(min(ahead, max(0.0, deadline - time.monotonic())))
            total += got
            if err or cut:
                break
            done += 1
            if hdrs.get("connection", "").lower() == "close":
                s.close()
                s = None
    except socket.timeout:
        pass
    except OSError as e:
        err = f"{type(e).__name__}: {e}"
    secs = time.monotonic() - t0
    if s is not None:
        s.close()
    res = {"bytes": total, "secs": round(secs, 3), "mbps": round(total / secs / 1e6, 1) if secs > 0 else 0,
           "complete": done}
    if err:
        res["error"] = err
    out(res)
    return 1 if err else 0


# --- stall -----------------------------------------------------------------
def cmd_stall(a):
    host, port, path = parse_url(a.url)
    s = connect(host, port)
    get(s, host, port, path)
    r = Resp(s)
    try:
        status, hdrs = r.head()
    except (OSError, ValueError) as e:
        out({"error": f"no response head: {e}"})
        return 1
    if status != 200:
        out({"error": f"status {status}"})
        return 1
    print("stalled", flush=True)
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    end = time.monotonic() + a.secs
    while not stop and time.monotonic() < end:
        time.sleep(0.05)
    # Still alive? A connection the proxy gave up on reads as EOF/RST.
    s.setblocking(False)
    try:
        alive = s.recv(1, socket.MSG_PEEK) != b""
    except BlockingIOError:
        alive = True
    except OSError:
        alive = False
    s.close()
    out({"status": status, "content_length": hdrs.get("content-length"), "alive_at_end": alive})
    return 0


# --- hold ------------------------------------------------------------------
async def http_get_json(hp, path):
    r, w = await asyncio.open_connection(*hp)
    w.write(f"GET {path} HTTP/1.1\r\nHost: {hp[0]}:{hp[1]}\r\nConnection: close\r\n\r\n".encode())
    await w.drain()
    data = await r.read()
    w.close()
    head, _, body = data.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(f"control {path}: {head[:100]!r}")
    return json.loads(body)


def sample(pids):
    return {name: {"rss_kib": rss_kib(pid), "fds": nfds(pid)} for name, pid in pids.items()}


async def hold_main(a):
    soft, hard = raise_nofile()
    n = a.n
    capped = None
    if n + 64 > soft:
        capped = f"RLIMIT_NOFILE {soft}/{hard} allows {soft - 64} client connections, not {n}"
        n = soft - 64
    target = hostport(a.target)
    control = hostport(a.control)
    pids = dict(p.split("=", 1) for p in a.pid)
    pids = {k: int(v) for k, v in pids.items()}
    res = {"n_wanted": a.n, "n": n, "nofile": [soft, hard]}
    if capped:
        res["n_capped"] = capped
    res["before"] = sample(pids)
    released = asyncio.Event()
    statuses = {}
    early = {}
    errors = []
    conns = []
    sem = asyncio.Semaphore(a.connect_concurrency)
    req = f"GET /hold?secs={a.hold_secs} HTTP/1.1\r\nHost: {target[0]}:{target[1]}\r\n\r\n".encode()

    async def one(i):
        try:
            async with sem:
                r, w = await asyncio.wait_for(asyncio.open_connection(*target), 30)
                w.write(req)
                await w.drain()
            conns.append(w)
            head = await r.readuntil(b"\r\n\r\n")
            st = int(head.split(b" ", 2)[1])
            m = re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", head)
            body = await r.readexactly(int(m.group(1))) if m else b""
            key = f"{st} {body.strip().decode(errors='replace')[:40]}"
            d = statuses if released.is_set() else early
            d[key] = d.get(key, 0) + 1
        except Exception as e:  # noqa: BLE001 (reported, not raised)
            if len(errors) < 5:
                errors.append(f"conn {i}: {type(e).__name__}: {e}")
            elif len(errors) == 5:
                errors.append("...")
            key = f"error {type(e).__name__}"
            d = statuses if released.is_set() else early
            d[key] = d.get(key, 0) + 1

    t0 = time.monotonic()
    tasks = [asyncio.create_task(one(i)) for i in range(n)]
    # Wait until the origin holds them all (or stops making progress).
    held = 0
    last_change = time.monotonic()
    deadline = t0 + a.timeout
    while True:
        await asyncio.sleep(0.2)
        st = await http_get_json(control, "/_stats")
        if st["held"] != held:
            held = st["held"]
            last_change = time.monotonic()
        if held >= n:
            break
        if time.monotonic() > deadline or time.monotonic() - last_change > a.stall_secs:
            break
    res["open_secs"] = round(time.monotonic() - t0, 2)
    res["held"] = held
    await asyncio.sleep(a.settle)
    samples = [sample(pids)]
    for _ in range(2):
        await asyncio.sleep(0.3)
        samples.append(sample(pids))
    during = {}
    for name in pids:
        rs = [s[name]["rss_kib"] for s in samples if s[name]["rss_kib"] is not None]
        during[name] = {"rss_kib": max(rs) if rs else None, "fds": samples[-1][name]["fds"]}
    res["during"] = during
    res["held_at_sample"] = (await http_get_json(control, "/_stats"))["held"]
    released.set()
    rel = await http_get_json(control, "/_release")
    res["released_by_origin"] = rel["released"]
    done, pending = await asyncio.wait(tasks, timeout=a.timeout)
    for t in pending:
        t.cancel()
    if pending:
        errors.append(f"{len(pending)} responses did not arrive within {a.timeout}s of the release")
    for w in conns:
        w.close()
    await asyncio.sleep(a.settle + 1)
    res["after"] = sample(pids)
    # natwrp hands freed heap back to the system from a 5 s timer once the
    # load has fallen (malloc_trim): sample again after it has run.
    await asyncio.sleep(6)
    res["after_trim"] = sample(pids)
    res["answers"] = statuses
    res["early_answers"] = early
    if errors:
        res["errors"] = errors
    ok = held >= n and statuses.get("200 released", 0) == n and not early and not errors
    if not ok:
        res["error"] = (f"held {held} of {n}; answers after release {statuses}; "
                        f"answers before release {early}; errors {errors[:3]}")
    out(res)
    return 0 if ok else 1


def cmd_hold(a):
    return asyncio.run(hold_main(a))


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("hold")
    p.add_argument("--target", required=True)
    p.add_argument("--control", required=True)
    p.add_argument("--n", type=int, default=10000)
    p.add_argument("--pid", action="append", default=[])
    p.add_argument("--timeout", type=float, default=90)
    p.add_argument("--stall-secs", type=float, default=15)
    p.add_argument("--settle", type=float, default=1.0)
    p.add_argument("--hold-secs", type=int, default=240)
    p.add_argument("--connect-concurrency", type=int, default=256)
    p = sub.add_parser("stream")
    p.add_argument("--url", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--expect", type=int, default=0)
    p = sub.add_parser("bulk")
    p.add_argument("--url", required=True)
    p.add_argument("--secs", type=float, required=True)
    p.add_argument("--bytes", type=int, default=0)
    p.add_argument("--rate", type=float, default=0, help="MB/s at most (default: as fast as it can)")
    p = sub.add_parser("stall")
    p.add_argument("--url", required=True)
    p.add_argument("--secs", type=float, required=True)
    a = ap.parse_args()
    return {"hold": cmd_hold, "stream": cmd_stream, "bulk": cmd_bulk, "stall": cmd_stall}[a.cmd](a)


if __name__ == "__main__":
    sys.exit(main())
