#!/usr/bin/env python3
"""scripts/bench/origin.py: the asyncio origin of `make bench` for what nginx
cannot do cheaply: hold 10,000 requests open at once, stream timestamped
chunks, and serve large bodies from memory. Standard library only.

Usage:  python3 scripts/bench/origin.py [--port 0]

Listens on 127.0.0.1 only, prints "origin listening PORT" (flushed) once it
accepts, and serves HTTP/1.1 keep-alive until SIGTERM/SIGINT. Raises its
RLIMIT_NOFILE soft limit to the hard limit. Request bodies with
Content-Length are read and dropped; chunked request bodies get 400.

Endpoints (GET; the query string is parsed, the path must match exactly):
  /hold?secs=S      long poll: answers 200 "released\\n" when /_release is
                    called (or after S seconds, default 120: "timeout\\n").
  /_stats           JSON {"held", "conns", "max_held", "released", "timeouts"}
  /_release         releases every request held now; JSON {"released": N}
  /stream?n=N&ms=M&pad=P
                    chunked: N chunks, one every M ms (default 200, 20),
                    each "t=<time.time_ns()>;" padded with '.' to P bytes
                    (default 64) and a newline. The timestamp is taken just
                    before the chunk is written, with the wall clock, so a
                    client on the same machine can compute each chunk's
                    delay with its own time.time_ns().
  /big?bytes=B      B bytes (default 100 MiB) with Content-Length, written
                    from a 1 MiB buffer in memory as fast as the peer reads.
  /small            1 KiB body.
"""
import argparse
import asyncio
import json
import resource
import signal
import sys
import time
from urllib.parse import parse_qs, urlsplit

BLOCK = bytes(range(256)) * 4096  # 1 MiB
SMALL = BLOCK[:1024]
MAX_HEAD = 65536


class State:
    def __init__(self):
        self.held = 0
        self.max_held = 0
        self.conns = 0
        self.released = 0
        self.timeouts = 0
        self.release_ev = asyncio.Event()


def head_bytes(status, reason, headers):
    lines = [f"HTTP/1.1 {status} {reason}"]
    lines += [f"{k}: {v}" for k, v in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


async def send_simple(w, status, reason, body, ctype="text/plain", close=False):
    hdrs = [("Content-Type", ctype), ("Content-Length", str(len(body)))]
    if close:
        hdrs.append(("Connection", "close"))
    w.write(head_bytes(status, reason, hdrs) + body)
    await w.drain()


async def handle(st, reader, writer):
    st.conns += 1
    try:
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, ConnectionError):
                return
            except asyncio.LimitOverrunError:
                await send_simple(writer, 431, "Request Header Fields Too Large", b"too large\n", close=True)
                return
            lines = head.decode("latin-1").split("\r\n")
            try:
                method, target, version = lines[0].split(" ")
            except ValueError:
                await send_simple(writer, 400, "Bad Request", b"bad request line\n", close=True)
                return
            hdrs = {}
            for ln in lines[1:]:
                if ":" in ln:
                    k, v = ln.split(":", 1)
                    hdrs[k.strip().lower()] = v.strip()
            if "chunked" in hdrs.get("transfer-encoding", "").lower():
                await send_simple(writer, 400, "Bad Request", b"chunked bodies not supported\n", close=True)
                return
            clen = int(hdrs.get("content-length", "0") or 0)
            while clen > 0:
                chunk = await reader.read(min(clen, 1 << 20))
                if not chunk:
                    return
                clen -= len(chunk)
            close = version == "HTTP/1.0" or hdrs.get("connection", "").lower() == "close"
            u = urlsplit(target)
            q = {k: v[-1] for k, v in parse_qs(u.query).items()}
            path = u.path
            if path == "/hold":
                await do_hold(st, writer, float(q.get("secs", "120")))
            elif path == "/_stats":
                body = json.dumps({"held": st.held, "conns": st.conns, "max_held": st.max_held,
                                   "released": st.released, "timeouts": st.timeouts}).encode()
                await send_simple(writer, 200, "OK", body + b"\n", "application/json")
            elif path == "/_release":
                n = st.held
                ev, st.release_ev = st.release_ev, asyncio.Event()
                ev.set()
                await send_simple(writer, 200, "OK", json.dumps({"released": n}).encode() + b"\n",
                                  "application/json")
            elif path == "/stream":
                await do_stream(writer, int(q.get("n", "200")), float(q.get("ms", "20")),
                                int(q.get("pad", "64")))
            elif path == "/big":
                await do_big(writer, int(q.get("bytes", str(100 << 20))))
            elif path == "/small":
                await send_simple(writer, 200, "OK", SMALL, "application/octet-stream")
            else:
                await send_simple(writer, 404, "Not Found", b"not found\n")
            if close:
                return
    except (ConnectionError, asyncio.CancelledError):
        return
    finally:
        st.conns -= 1
        try:
            writer.close()
        except Exception:
            pass


async def do_hold(st, writer, secs):
    st.held += 1
    st.max_held = max(st.max_held, st.held)
    ev = st.release_ev
    try:
        try:
            await asyncio.wait_for(ev.wait(), timeout=secs)
            body = b"released\n"
            st.released += 1
        except asyncio.TimeoutError:
            body = b"timeout\n"
            st.timeouts += 1
    finally:
        st.held -= 1
    await send_simple(writer, 200, "OK", body)


async def do_stream(writer, n, ms, pad):
    writer.write(head_bytes(200, "OK", [("Content-Type", "text/plain"), ("Cache-Control", "no-store"),
                                        ("Transfer-Encoding", "chunked")]))
    await writer.drain()
    loop = asyncio.get_running_loop()
    start = loop.time()
    for i in range(n):
        delay = start + i * ms / 1000.0 - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        body = f"t={time.time_ns()};".encode()
        body = body + b"." * max(0, pad - len(body) - 1) + b"\n"
        writer.write(b"%x\r\n%s\r\n" % (len(body), body))
        await writer.drain()
    writer.write(b"0\r\n\r\n")
    await writer.drain()


async def do_big(writer, nbytes):
    writer.write(head_bytes(200, "OK", [("Content-Type", "application/octet-stream"),
                                        ("Content-Length", str(nbytes))]))
    mv = memoryview(BLOCK)
    left = nbytes
    while left > 0:
        k = min(left, len(BLOCK))
        writer.write(mv[:k])
        left -= k
        await writer.drain()


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=0)
    a = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    st = State()
    server = await asyncio.start_server(lambda r, w: handle(st, r, w), "127.0.0.1", a.port,
                                        backlog=4096, limit=MAX_HEAD)
    port = server.sockets[0].getsockname()[1]
    print(f"origin listening {port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)
