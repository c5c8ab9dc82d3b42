"""b3 listeners: `--listen :P` binds [::]:P and falls back to 0.0.0.0:P when
IPv6 cannot be had. Regression: with [::]:P taken (IPV6_V6ONLY, by another
process) serve closed the failed IPv6 handle and initialised the same memory
again before its close callback ran: libuv assertion uv__finish_close,
SIGABRT. Now serve listens on 0.0.0.0:P (or exits 2 with a reason)."""

import socket

from harness import check, eq, fail


def _hold_v6only():
    """A socket bound to [::]:P with IPV6_V6ONLY=1 (0.0.0.0:P stays free).
    None when this host has no IPv6."""
    if not socket.has_ipv6:
        return None
    try:
        s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    except OSError:
        return None
    try:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        s.bind(("::", 0))
        s.listen(1)
    except OSError:
        s.close()
        return None
    return s


def test_v6_taken_falls_back_to_v4(t):
    for _ in range(5):  # the port must be free on IPv4 too
        held = _hold_v6only()
        if held is None:
            print("skip: no IPv6 on this host")
            return
        port = held.getsockname()[1]
        probe = socket.socket()
        try:
            probe.bind(("0.0.0.0", port))
            probe.close()
            break
        except OSError:
            probe.close()
            held.close()
    else:
        fail("no port found free on IPv4 whose IPv6 side could be held")
    try:
        p = t.natwrp("serve", ["serve", "--listen", ":%d" % port])
        m = p.wait_for(r"listening on http://(\S+)|cannot listen", 15)
        if m.group(1) is None:
            rc = p.wait_exit(10)
            eq(rc, 2, "exit status when it cannot listen; output:\n%s" % p.text())
            return
        eq(m.group(1), "0.0.0.0:%d" % port, "the IPv4 fallback address")
        c = socket.create_connection(("127.0.0.1", port), timeout=5)  # it accepts there
        c.close()
        check(p.popen.poll() is None, "serve exited after listening:\n%s" % p.text())
    finally:
        held.close()
