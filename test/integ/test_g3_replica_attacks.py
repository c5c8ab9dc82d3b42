"""g3 replica attacks: the multi-address agent (issue 13) under hostile or
awkward address sets: two of its addresses reaching one server, address
churn, retiring tunnels that carry long streams, shutdown mid-change."""

import os
import socket
import threading
import time

from fakeserver import FakeServer
from harness import (base_env, check, eq, get, timed)


def v6_unavailable():
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
    except OSError:
        return True
    return False


@timed(60)
def test_g3_two_addresses_one_server_no_flap(t):
    """127.0.0.1 and ::1 of one dual-stack serve (the default
    REMOTE_URL=http://localhost:... on a host whose localhost has both): the
    agent keeps one tunnel through each, serve keeps both. Before, each
    tunnel replaced the other (same name), forever, failing in-flight
    streams at every swap."""
    if v6_unavailable():
        print("skip: ::1 unavailable here")
        return
    o = t.origin("A")
    s = t.serve(listen="[::]:0")
    m = s.proc.mark()
    a = t.agent("http://127.0.0.1:%d,http://[::1]:%d" % (s.port, s.port), o, wait=False)
    a.wait_for(r"tunnel up agent=a1 remote=ws://127\.0\.0\.1:%d" % s.port, 15)
    a.wait_for(r"tunnel up agent=a1 remote=ws://\[::1\]:%d" % s.port, 15)
    for i in range(30):
        r = get(s.port, "/name", host="127.0.0.1")
        eq(r.status, 200, "request %d" % i)
    eq(s.proc.count(r"tunnel replaced", m), 0, "tunnels replaced on serve")
    eq(a.count(r"tunnel down"), 0, "tunnels down on the agent")
    eq(s.proc.count(r"tunnel open tun=\d+ agent=a1 ", m), 2, "tunnels opened on serve")


def goaway_replica(fs, stop, accepted):
    """A hostile replica: every tunnel gets its 101, then GOAWAY at once,
    and stays open (its sockets are kept until the test ends)."""
    while not stop.is_set():
        try:
            tun = fs.accept(timeout=0.5)
        except Exception:  # noqa: BLE001 (no agent within the timeout)
            continue
        accepted.append(time.monotonic())
        try:
            tun.goaway(0)
        except OSError:
            pass


@timed(60)
def test_g3_goaway_at_once_backs_off(t):
    """A replica that answers every tunnel with GOAWAY at once: the slot
    reconnects at once the first time (a rolling restart), then on its own
    backoff, not in a tight loop; the healthy replica keeps its tunnel and
    answers. Before, every GOAWAY reconnected at once: hundreds of tunnels
    (and log lines) a second."""
    o = t.origin("A")
    s = t.serve()
    fs = FakeServer()
    stop, accepted = threading.Event(), []
    th = threading.Thread(target=goaway_replica, args=(fs, stop, accepted))
    th.start()
    try:
        a = t.agent("%s,%s" % (fs.url, s.url), o, wait=False)
        a.wait_for(r"tunnel up agent=a1 remote=ws://127\.0\.0\.1:%d" % s.port, 15)
        deadline = time.monotonic() + 15
        while not accepted and time.monotonic() < deadline:
            time.sleep(0.05)
        check(accepted, "the hostile replica got a tunnel")
        window_end = accepted[0] + 3.0
        while time.monotonic() < window_end:
            r = get(s.port, "/name")
            eq(r.status, 200, "the healthy replica answers")
        n = sum(1 for x in accepted if x < window_end)
        check(n <= 6, "tunnels to the GOAWAY replica in 3 s: %d (want backoff, <= 6)" % n)
        eq(a.count(r"tunnel down agent=a1 reason=.* remote=ws://127\.0\.0\.1:%d" % s.port), 0,
           "the healthy replica's tunnel stayed up")
    finally:
        stop.set()
        th.join()
        fs.close()
