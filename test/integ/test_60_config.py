"""60 agent configuration: errors exit 2 naming the setting; .env < environment
< flags; dotenv syntax."""

import os
import socket

from harness import check, echo, eq, get, write_env_file


def _closed_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    return s, port


def test_agent_config_errors_exit_2(t):
    hold, port = _closed_port()
    ok = {"AGENT_ID": "cfg1", "REMOTE_URL": "http://127.0.0.1:%d" % port,
          "LOCAL_URL": "http://127.0.0.1:%d" % port}
    empty = os.path.join(t.logdir, "empty")
    os.makedirs(empty)
    bad_env = write_env_file(os.path.join(t.logdir, "bad.env"),
                             'AGENT_ID="unterminated\nREMOTE_URL=http://127.0.0.1:1\n')

    def without(k):
        d = dict(ok)
        del d[k]
        return d

    def with_(**kw):
        d = dict(ok)
        d.update(kw)
        return d

    cases = [
        ("no AGENT_ID", without("AGENT_ID"), [], "AGENT_ID"),
        ("AGENT_ID with a space", with_(AGENT_ID="bad id"), [], "AGENT_ID"),
        ("AGENT_ID too long", with_(AGENT_ID="x" * 129), [], "AGENT_ID"),
        ("empty AGENT_ID", with_(AGENT_ID=""), [], "AGENT_ID"),
        ("no REMOTE_URL", without("REMOTE_URL"), [], "REMOTE_URL"),
        ("REMOTE_URL ftp", with_(REMOTE_URL="ftp://127.0.0.1:21"), [], "REMOTE_URL"),
        ("REMOTE_URL no host", with_(REMOTE_URL="http://"), [], "REMOTE_URL"),
        ("REMOTE_URL bad port", with_(REMOTE_URL="http://127.0.0.1:0"), [], "REMOTE_URL"),
        ("no LOCAL_URL", without("LOCAL_URL"), [], "LOCAL_URL"),
        ("LOCAL_URL port too big", with_(LOCAL_URL="http://127.0.0.1:99999"), [], "LOCAL_URL"),
        ("LOCAL_URL no scheme", with_(LOCAL_URL="127.0.0.1:80"), [], "LOCAL_URL"),
        ("LOCAL_URL with query", with_(LOCAL_URL="http://127.0.0.1:80/?a=b"), [], "LOCAL_URL"),
        ("PING_INTERVAL junk", with_(PING_INTERVAL="abc"), [], "PING_INTERVAL"),
        ("PING_INTERVAL negative", with_(PING_INTERVAL="-5"), [], "PING_INTERVAL"),
        ("POOL_SIZE junk", with_(POOL_SIZE="many"), [], "POOL_SIZE"),
        ("WINDOW too small", with_(WINDOW="12"), [], "WINDOW"),
        ("--id invalid", ok, ["--id", "bad id"], "id"),
        ("--remote invalid", ok, ["--remote", "gopher://x"], "remote"),
        ("--local invalid", ok, ["--local", "nonsense"], "local"),
        ("unknown flag", ok, ["--bogus"], "bogus"),
        ("--env missing file", ok, ["--env", "/nonexistent/natwrp.env"], "/nonexistent/natwrp.env"),
        (".env syntax error", {}, ["--env", bad_env], "line 1"),
    ]
    try:
        for what, env, args, name in cases:
            rc, out = t.run_natwrp("agent-bad", ["agent"] + args, env=env, cwd=empty)
            ctx = "%s: status %s, output:\n%s" % (what, rc, out)
            eq(rc, 2, "exit status for " + ctx)
            check(name.lower() in out.lower(), "output does not name %r for %s" % (name, ctx))
            check("tunnel up" not in out, "agent connected despite " + ctx)
    finally:
        hold.close()


def test_agent_config_precedence(t):
    oa, ob, oc = t.origin("A"), t.origin("B"), t.origin("C")
    s = t.serve()
    home = os.path.join(t.logdir, "home")
    os.makedirs(home)
    # The default .env in the working directory.
    write_env_file(os.path.join(home, ".env"),
                   "AGENT_ID=fromfile\nREMOTE_URL=%s\nLOCAL_URL=%s\n" % (s.url, oa.url))

    def start(env, args, agent_id, label):
        mark = s.proc.mark()
        p = t.natwrp(label, ["agent"] + args, env=env, cwd=home)
        p.wait_for(r"tunnel up agent=%s\b" % agent_id, 15)
        s.wait_tunnel_open(agent_id, since=mark)
        return p

    # 1. File only.
    p = start({}, [], "fromfile", "agent-file")
    eq(get(s, "/name").body, b"A\n", ".env LOCAL_URL")
    p.terminate()
    # 2. Environment beats the file.
    p = start({"LOCAL_URL": ob.url}, [], "fromfile", "agent-env")
    eq(get(s, "/name").body, b"B\n", "environment LOCAL_URL over .env")
    p.terminate()
    # 3. Flags beat both.
    p = start({"LOCAL_URL": ob.url, "AGENT_ID": "fromenv"},
              ["--local", oc.url, "--id", "fromflag"], "fromflag", "agent-flags")
    eq(get(s, "/name").body, b"C\n", "--local over environment and .env")
    p.terminate()
    # 4. --env FILE instead of the default .env.
    other = write_env_file(os.path.join(t.logdir, "other.env"),
                           "AGENT_ID=other\nREMOTE_URL=%s\nLOCAL_URL=%s\n" % (s.url, ob.url))
    p = start({}, ["--env", other], "other", "agent-envfile")
    eq(get(s, "/name").body, b"B\n", "--env FILE")
    p.terminate()


def test_env_file_syntax(t):
    o = t.origin("A")
    s = t.serve()
    path = write_env_file(os.path.join(t.logdir, "syntax.env"), "\n".join([
        "# natwrp agent settings",
        "",
        "   # an indented comment",
        'export AGENT_ID="quoted@home"',
        "REMOTE_URL=%s # the public side" % s.url,
        "LOCAL_URL='%s/sq'" % o.url,
        "PING_INTERVAL=30",
        "UNUSED_KEY=with spaces inside",
        "",
    ]))
    mark = s.proc.mark()
    a = t.natwrp("agent", ["agent", "--env", path])
    a.wait_for(r"tunnel up agent=quoted@home\b", 15)
    s.wait_tunnel_open("quoted@home", since=mark)
    eq(echo(s, "/echo")["path"], "/sq/echo", "LOCAL_URL from a single-quoted value")
