"""g3 replica attacks: the multi-address agent (issue 13) under hostile or
awkward address sets: two of its addresses reaching one server, address
churn, retiring tunnels that carry long streams, shutdown mid-change."""

import os
import socket

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
