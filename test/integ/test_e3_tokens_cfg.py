"""e3 serve's issue-11 options at start: --tokens/TOKENS_FILE is read and
checked before serve listens (a malformed file exits 2 naming the file and
the line, never a token), --domain/DOMAIN must be a DNS name, --route-hold
must be a duration; a good file starts serve, and tunnels and requests work
as before."""

import os

from harness import check, echo, eq, get

SECRET = "S3cr3t-Tok3n-e3"


def _write(t, name, data):
    path = os.path.join(t.logdir, name)
    with open(path, "wb") as f:
        f.write(data)
    return path


def _refused(t, args, env, want, label="serve-bad"):
    """serve exits 2 with one line that contains want and no secret."""
    rc, out = t.run_natwrp(label, ["serve", "--listen", "127.0.0.1:0"] + args, env=env)
    lines = [x for x in out.splitlines() if x.strip()]
    ctx = "serve %s env %s -> status %s, output:\n%s" % (" ".join(args), env, rc, out)
    eq(rc, 2, "exit status: " + ctx)
    check(len(lines) == 1, "want one line: " + ctx)
    check(lines[0].startswith("natwrp serve: "), "want 'natwrp serve: ...': " + ctx)
    check(want in lines[0], "want %r in the reason: %s" % (want, ctx))
    check("S3cr3t" not in out, "a token was printed: " + ctx)
    check("listening" not in out, "serve listened: " + ctx)
    return lines[0]


def test_tokens_file_malformed_exits_2(t):
    bad_pattern = _write(t, "bad_pattern.tokens",
                         b"# who may claim what\nops *\n" + SECRET.encode() +
                         b" a.example.com/api\n")
    no_pattern = _write(t, "no_pattern.tokens",
                        b"ops *\r\n\r\n" + SECRET.encode() + b"   # nothing granted\r\n")
    dotless = _write(t, "dotless.tokens", b"ops *\n" + SECRET.encode() + b" ollama\n")
    ctl = _write(t, "ctl.tokens", SECRET.encode() + b"\x01 *\n")
    nul = _write(t, "nul.tokens", b"ops *\nx *\n" + SECRET.encode() + b" \x00 *\n")

    # Named as set: the flag, or the variable.
    _refused(t, ["--tokens", bad_pattern], None,
             "--tokens: %s: line 3: pattern \"a.example.com/api\"" % bad_pattern)
    _refused(t, [], {"TOKENS_FILE": bad_pattern},
             "natwrp serve: TOKENS_FILE: %s: line 3: pattern \"a.example.com/api\"" % bad_pattern)
    _refused(t, [], {"TOKENS_FILE": no_pattern},
             "TOKENS_FILE: %s: line 3: a token needs at least one pattern" % no_pattern)
    _refused(t, [], {"TOKENS_FILE": dotless},
             "TOKENS_FILE: %s: line 2: pattern \"ollama\": a name without a dot needs --domain"
             % dotless)
    _refused(t, [], {"TOKENS_FILE": ctl},
             "TOKENS_FILE: %s: line 1: a token may hold only visible ASCII" % ctl)
    _refused(t, [], {"TOKENS_FILE": nul}, "TOKENS_FILE: %s: line 3: NUL byte" % nul)
    missing = os.path.join(t.logdir, "missing.tokens")
    _refused(t, [], {"TOKENS_FILE": missing},
             "TOKENS_FILE: %s: No such file or directory" % missing)
    # The flag wins over a bad variable, and --domain makes the dot-less line good.
    s = t.serve("--tokens", dotless, "--domain", "tunnel.example.com", "--queue-timeout", "0.1",
                env={"TOKENS_FILE": bad_pattern}, label="serve-flag-wins")
    # An answer (no agent: 503 or 404) shows the loop runs, so its signal
    # handlers are in place before cleanup sends SIGTERM ("listening" is
    # logged just before they are).
    r = get(s, "/")
    check(r.status in (404, 503), "serve with a good --tokens over a bad TOKENS_FILE: %s"
          % r.status)


def test_bad_domain_and_route_hold_exit_2(t):
    for value in ["bad_name.example.com", "*.example.com", "-a.example.com", "a..example.com",
                  "example.com:8000", "x" * 64 + ".example.com", ("abcdefghi." * 21)[:-1]]:
        _refused(t, ["--domain", value], None, "--domain: invalid domain")
        _refused(t, [], {"DOMAIN": value}, "DOMAIN: invalid domain")
    _refused(t, ["--route-hold", "0"], None, "--route-hold: must be greater than 0")
    _refused(t, [], {"ROUTE_HOLD": "soon"}, "ROUTE_HOLD: invalid duration 'soon'")


def test_good_tokens_file_starts(t):
    good = _write(t, "good.tokens", b"\n".join([
        b"# alice runs her own services",
        b"alice\t*.alice.example.com  alice.example.com   # two patterns",
        b"carol ollama *.team\r",
        b"  # CONN_TOKEN counts as a line 'CONN_TOKEN *'",
        b"alice extra.example.com",
        b"",
    ]))
    o = t.origin("A")
    s = t.serve("--tokens", good, "--conn-token", "conn-e3", "--route-hold", "30",
                env={"DOMAIN": "Tunnel.Example.COM."})
    # Nothing else changes yet: an agent with CONN_TOKEN connects, requests pass.
    t.agent(s, o, agent_id="e3", env={"CONN_TOKEN": "conn-e3"})
    eq(echo(s, "/hello")["path"], "/hello", "a request through the tunnel")
    check("S3cr3t" not in s.proc.text(), "serve logged a token")
