#!/usr/bin/env python3
"""scripts/bench/report.py RESDIR: the text report of `make bench`, built
from what scripts/bench.sh left in RESDIR:

  meta.txt        key=value lines (machine, tools, method, settings)
  results.tsv     "section<TAB>name<TAB>metric<TAB>value" samples, one per
                  round; the report shows medians (sections: main, cpu,
                  hol, rss, scale)
  hold.json       the `clients.py hold` result (open streams footprint)
  stream.CASE.LOAD.ROUND  per-chunk delays in microseconds
  problems        one line per failed measurement
  logsum          warnings/errors found in the natwrp and nginx logs

Targets are reported (PASS/MISS), never enforced: the exit status is 0
whenever the report could be written.
"""
import json
import os
import statistics
import sys
from collections import defaultdict

res = sys.argv[1]


def read(name, default=""):
    p = os.path.join(res, name)
    if not os.path.exists(p):
        return default
    with open(p) as f:
        return f.read()


meta = {}
for line in read("meta.txt").splitlines():
    if "=" in line:
        k, v = line.split("=", 1)
        meta[k] = v

samples = defaultdict(list)
for line in read("results.tsv").splitlines():
    parts = line.split("\t")
    if len(parts) == 4:
        try:
            samples[tuple(parts[:3])].append(float(parts[3]))
        except ValueError:
            pass


def med(section, name, metric):
    v = samples.get((section, name, metric))
    return statistics.median(v) if v else None


def n(section, name, metric):
    return len(samples.get((section, name, metric), []))


def f(v, d=0, unit=""):
    if v is None:
        return "-"
    return f"{v:.{d}f}{unit}"


def ratio(a, b):
    if a is None or b is None or b == 0:
        return None
    return a / b


def fr(r):
    return "-" if r is None else f"{r:.2f}x"


def table(rows, aligns=None):
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    out = []
    for r in rows:
        cells = []
        for i, c in enumerate(r):
            left = i == 0 or (aligns and aligns[i] == "<")
            cells.append(str(c).ljust(widths[i]) if left else str(c).rjust(widths[i]))
        out.append("  ".join(cells).rstrip())
    return "\n".join(out)


scens = meta.get("scenarios", "direct nginx nginx2 natwrp natwrp-adm natwrp-ops natwrp-tls tls").split()
lines = []
P = lines.append

P(f"natwrp bench, {meta.get('started', '?')} (UTC)")
for k in ("machine", "natwrp", "tools", "cpu_source"):
    if k in meta:
        P(f"{k + ':':<9} {meta[k]}")
P(f"method:   {meta.get('rounds', '?')} interleaved rounds (A B C ... A B C ...), medians of the rounds; "
  "MB = 10^6 bytes, KiB = 1024 bytes")
P("paths:    direct = wrk/curl -> nginx origin; nginx = -> nginx reverse proxy (1 hop, upstream keepalive 64,")
P("          proxy_buffering off, proxy_request_buffering off) -> origin; nginx2 = the same proxy with 2 workers;")
P("          natwrp = -> serve ==ws tunnel==> agent -> origin;")
P("          natwrp-adm = natwrp with both admin listeners on and the agent's inspector on, no dashboard open;")
P("          natwrp-ops = natwrp with both admin listeners on, the agent's inspector capturing and a dashboard")
P("          polling both every second; natwrp-tls = same as natwrp over a wss tunnel (client to serve plain")
P("          http); tls = https client + wss tunnel")
P("          (each wrk run opens its connections at its start: for tls, that many TLS handshakes on serve's")
P("          event loop, which weigh on tls p99 in short runs)")
if meta.get("settings"):
    P(f"natwrp settings: {meta['settings']}")
P("")

# --- main table ----------------------------------------------------------
def cpu_total(s):
    """CPU ms per 1000 requests of a path's proxy: serve + agent, or nginx's worker(s)."""
    cs, ca = med("cpu", s, "serve"), med("cpu", s, "agent")
    if cs is not None or ca is not None:
        return (cs or 0) + (ca or 0)
    return med("cpu", s, "proxy")


have_main = any(k[0] == "main" for k in samples)
if have_main:
    P(f"1 KiB GET: wrk {meta.get('wrk', '?')} --latency; {meta.get('big_mib', '100')} MiB GET and POST: curl, "
      "one transfer each per round.")
    P("cpu: CPU time of the proxy processes (natwrp: serve + agent; nginx: the proxy's worker; nginx2: its two")
    P("     workers summed) and of the origin nginx worker, per 1000 requests of the 1 KiB GET run, in ms")
    rows = [["scenario", "req/s", "p50 ms", "p99 ms", "down MB/s", "up MB/s", "cpu proxy", "(serve+agent)",
             "cpu origin", "samples"]]
    for s in scens:
        cs, ca, cp = med("cpu", s, "serve"), med("cpu", s, "agent"), med("cpu", s, "proxy")
        if cs is not None or ca is not None:
            cp = (cs or 0) + (ca or 0)
            split = f"({f(cs, 1)}+{f(ca, 1)})"
        else:
            split = ""
        rows.append([s, f(med("main", s, "rps")), f(med("main", s, "p50"), 2), f(med("main", s, "p99"), 2),
                     f(med("main", s, "down"), 1), f(med("main", s, "up"), 1), f(cp, 1), split,
                     f(med("cpu", s, "origin"), 1),
                     f"{n('main', s, 'rps')}/{n('main', s, 'down')}/{n('main', s, 'up')}"])
    P(table(rows))
    P("")

    rows = [["ratio", "req/s", "p50", "p99", "down", "up", "cpu proxy"]]
    for a, b in (("natwrp", "nginx"), ("natwrp", "nginx2"), ("nginx2", "nginx"), ("natwrp", "direct"), ("nginx", "direct"), ("natwrp-adm", "natwrp"), ("natwrp-ops", "natwrp"),
                 ("natwrp-tls", "nginx"),
                 ("natwrp-tls", "natwrp"), ("tls", "natwrp")):
        if a in scens and b in scens:
            rows.append([f"{a}/{b}"] + [fr(ratio(med("main", a, m), med("main", b, m)))
                                        for m in ("rps", "p50", "p99", "down", "up")]
                        + [fr(ratio(cpu_total(a), cpu_total(b))) if b != "direct" else "-"])
    if len(rows) > 1:
        P(table(rows))
        P("(ratios of medians; req/s and MB/s: higher is better; latency and cpu: lower is better)")
        P("")

# --- head of line --------------------------------------------------------
hol = [s for s in ("direct", "nginx", "natwrp", "natwrp-tls") if n("hol", s, "p99_idle")]
if hol:
    P(f"Head-of-line: small-request latency (wrk {meta.get('hol_wrk', '?')} --latency, 1 KiB GET) alone, then")
    P(f"while one client holds a {meta.get('huge_mib', '1024')} MiB download without reading it (stalled reader)")
    P(f"and another downloads {meta.get('big_mib', '100')} MiB bodies back to back, reading fast; same path.")
    rows = [["path", "p99 alone", "p99 loaded", "ratio", "p50 alone", "p50 loaded", "req/s alone",
             "req/s loaded", "bulk MB/s", "samples"]]
    for s in hol:
        rows.append([s, f(med("hol", s, "p99_idle"), 2, " ms"), f(med("hol", s, "p99_load"), 2, " ms"),
                     fr(ratio(med("hol", s, "p99_load"), med("hol", s, "p99_idle"))),
                     f(med("hol", s, "p50_idle"), 2, " ms"), f(med("hol", s, "p50_load"), 2, " ms"),
                     f(med("hol", s, "rps_idle")), f(med("hol", s, "rps_load")), f(med("hol", s, "bulk"), 1),
                     f"{n('hol', s, 'p99_idle')}/{n('hol', s, 'p99_load')}"])
    P(table(rows))
    P("(ratio = p99 loaded / p99 alone, of the medians; the nginx row is the same load through nginx; the")
    P(" direct row is the same load with no proxy at all, wrk and both downloads straight to the origin, the")
    P(" fast download paced to the rate natwrp's reached in the same round: what 2 busy cores alone cost)")
    P("")

# --- streaming latency ----------------------------------------------------
stream = defaultdict(dict)  # (case, load) -> {round: [delay ms]}
for name in os.listdir(res):
    if name.startswith("stream.") and name.count(".") == 3:
        _, case, load, rnd = name.split(".")
        with open(os.path.join(res, name)) as fh:
            stream[(case, load)][rnd] = [float(x) / 1000.0 for x in fh.read().split()]


def pct(v, p):
    if not v:
        return None
    v = sorted(v)
    return v[min(len(v) - 1, int(round(p / 100.0 * (len(v) - 1))))]


def medn(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


if stream:
    P(f"Streaming latency: the origin (scripts/bench/origin.py) sends a chunk every {meta.get('stream_ms', '20')} ms "
      "stamped with time.time_ns();")
    P("the client takes time.time_ns() when the chunk arrives: delay = arrival - stamp (same clock). p50/p99 per")
    P("round, medians over the rounds; added = median over the rounds of (natwrp - direct) in the same round.")
    P("'bulk' = while another client downloads from the same origin: through natwrp on the same tunnel, as fast")
    P("as it can; direct, on its own connection, paced to the rate the tunnel reached in that round.")
    rows = [["load", "direct p50", "direct p99", "natwrp p50", "natwrp p99", "added p50", "added p99", "max",
             "chunks"]]
    for load in ("idle", "bulk"):
        d, t = stream.get(("direct", load), {}), stream.get(("natwrp", load), {})
        if not d and not t:
            continue
        cols = {}
        for q in (50, 99):
            cols[("d", q)] = medn([pct(v, q) for v in d.values()])
            cols[("t", q)] = medn([pct(v, q) for v in t.values()])
            cols[("a", q)] = medn([pct(t[r], q) - pct(d[r], q) for r in t if r in d and t[r] and d[r]])
        mx = max((max(v) for v in t.values() if v), default=None)
        nd, nt = sum(len(v) for v in d.values()), sum(len(v) for v in t.values())
        rows.append([load, f(cols[("d", 50)], 3, " ms"), f(cols[("d", 99)], 3, " ms"), f(cols[("t", 50)], 3, " ms"),
                     f(cols[("t", 99)], 3, " ms"), f(cols[("a", 50)], 3, " ms"), f(cols[("a", 99)], 3, " ms"),
                     f(mx, 1, " ms"), f"{nd}/{nt}"])
    P(table(rows))
    P("(max = the largest natwrp delay of all rounds; chunks = direct/natwrp samples in all)")
    if n("stream", "natwrp", "bulk"):
        P(f"(bulk MB/s during the runs, medians: direct {f(med('stream', 'direct', 'bulk'), 1)}, "
          f"natwrp {f(med('stream', 'natwrp', 'bulk'), 1)})")
    P("")

# --- cipher: single-core AEAD throughput -------------------------------------
CIPHERS = ("AES-128-GCM", "AES-256-GCM", "CHACHA20-POLY1305")


def tunnel_cipher():
    """The cipher-bench name of the suite the natwrp-tls agent negotiated."""
    suite = meta.get("tls_suite", "")
    for key, c in (("CHACHA20-POLY1305", "CHACHA20-POLY1305"), ("AES-128-GCM", "AES-128-GCM"),
                   ("AES-256-GCM", "AES-256-GCM")):
        if key in suite:
            return c
    return None


if any(k[0] == "cipher" and k[1] in CIPHERS for k in samples):
    aesni = med("cipher", "aesni", "have")
    P(f"Cipher: single-core AEAD throughput of the linked {meta.get('cipher_lib', 'mbedTLS')} (scripts/bench/cipher.c),")
    P("16 KiB records with a 13-byte AAD, through mbedtls_cipher_auth_{en,de}crypt_ext as the TLS record layer;")
    P(f"MB/s of CPU time. AES-NI in mbedTLS and on this CPU: {'-' if aesni is None else ('yes' if aesni else 'no')}."
      f" The wss tunnel negotiated {meta.get('tls_suite') or '?'}.")
    rows = [["cipher", "seal MB/s", "open MB/s", "tunnel"]]
    for c in CIPHERS:
        rows.append([c, f(med("cipher", c, "seal"), 1), f(med("cipher", c, "open"), 1),
                     "<- negotiated" if c == tunnel_cipher() else ""])
    P(table(rows))
    P("(each end of the tunnel seals or opens every byte once: the slower of seal and open of the negotiated")
    P(" cipher is the most one core can carry; on this machine both ends share 2 cores with the client and origin)")
    P("")

# --- footprint --------------------------------------------------------------
rss_rows = [("serve-natwrp", "serve (natwrp)"), ("agent-natwrp", "agent (natwrp)"),
            ("serve-natwrp-adm", "serve (natwrp-adm)"), ("agent-natwrp-adm", "agent (natwrp-adm)"),
            ("serve-natwrp-ops", "serve (natwrp-ops)"), ("agent-natwrp-ops", "agent (natwrp-ops)"),
            ("serve-natwrp-tls", "serve (natwrp-tls)"), ("agent-natwrp-tls", "agent (natwrp-tls)"),
            ("nginx-proxy", "nginx proxy worker"), ("nginx-proxy2", "nginx2 proxy (2 workers)"),
            ("nginx-origin", "nginx origin worker")]
if any(k[0] == "rss" for k in samples):
    P("Footprint: VmRSS in KiB. idle = 1 s after the tunnels came up, before any request; after load = after")
    P(f"the 1 KiB GET and {meta.get('big_mib', '100')} MiB rounds (the origin keeps uploads in memory).")
    rows = [["process", "idle", "(anon + file)", "after load", "(anon + file)"]]
    for key, label in rss_rows:
        if n("rss", key, "idle") or n("rss", key, "load"):
            split = []
            for w in ("idle", "load"):
                a, fl = med("rss", key, w + "_anon"), med("rss", key, w + "_file")
                split.append(f"({f(a)} + {f(fl)})" if a is not None else "")
            rows.append([label, f(med("rss", key, "idle")), split[0], f(med("rss", key, "load")), split[1]])
    P(table(rows))
    P("(anon = RssAnon, the process's own memory; file = RssFile, mapped binary and shared libraries)")
    P("")

hold = None
hj = read("hold.json").strip()
if hj:
    try:
        hold = json.loads(hj.splitlines()[-1])
    except ValueError:
        hold = None
if hold:
    N = hold.get("n", 0)
    P(f"Open streams: {hold.get('held', '?')} of {N} requests held open at once (GET /hold, a long poll the")
    P(f"origin answers only when told) through a fresh serve + agent pair ({meta.get('hold_settings', '')}).")
    if hold.get("n_capped"):
        P(f"N capped: {hold['n_capped']}")
    P(f"All open after {hold.get('open_secs', '?')} s. per stream = (with - idle) / N; idle is sampled 1 s after start.")
    rows = [["process", "idle", f"with {N} open", "per stream", "after release", "6 s later",
             "fds with"]]
    for who in ("serve", "agent"):
        idle = med("rss", f"{who}-hold", "idle")
        during = hold.get("during", {}).get(who, {}).get("rss_kib")
        after = hold.get("after", {}).get(who, {}).get("rss_kib")
        later = hold.get("after_trim", {}).get(who, {}).get("rss_kib")
        per = (during - idle) * 1024 / N if during is not None and idle is not None and N else None
        rows.append([who, f(idle, 0, " KiB"), f(during, 0, " KiB"), f(per, 0, " B"), f(after, 0, " KiB"),
                     f(later, 0, " KiB"), str(hold.get("during", {}).get(who, {}).get("fds", "-"))])
    P(table(rows))
    ans = hold.get("answers", {})
    P(f"answers after release: {json.dumps(ans)}" + (f"; before release: {json.dumps(hold['early_answers'])}"
                                                      if hold.get("early_answers") else ""))
    P("")

# --- scale: serve processes on one public port ------------------------------
if n("scale", "one", "rps") or n("scale", "two", "rps"):
    one, two = med("scale", "one", "rps"), med("scale", "two", "rps")
    P(f"Several serve processes on one machine (BENCH_PARTS=scale): wrk {meta.get('wrk', '?')}, 1 KiB GET,")
    P("on one public port served by one serve process, then shared by two (SO_REUSEPORT), each with its")
    P("own agent port and agent (docs/deploy.md).")
    rows = [["processes", "req/s", "samples"], ["one", f(one), str(n("scale", "one", "rps"))],
            ["two", f(two), str(n("scale", "two", "rps"))]]
    P(table(rows))
    P(f"two/one req/s: {fr(ratio(two, one))} ({meta.get('machine', '?').split(',')[0]}; wrk, the nginx origin and")
    P("the agents run on the same cores)")
    P("")

# --- targets ---------------------------------------------------------------
P("Targets (issue): figures, ratios and PASS/MISS. A report only: the exit status does not depend on it.")


def verdict(ok):
    return "-" if ok is None else ("PASS" if ok else "MISS")


rows = [["metric", "natwrp", "against", "ratio", "target", "result"]]


def target_row(label, v, d, ref_label, ref, r, target, ok):
    rows.append([label, f(v, d), f"{ref_label} {f(ref, d)}" if ref_label else "-", fr(r), target, verdict(ok)])


def at_least(r, x):
    return None if r is None else r >= x


def at_most(r, x):
    return None if r is None else r <= x


# CPU per 1 KiB request: serve + agent against nginx's one-hop proxy worker.
cn, cx = cpu_total("natwrp") if have_main else None, med("cpu", "nginx", "proxy")
r = ratio(cn, cx)
target_row("cpu ms/1000 1 KiB GET (serve+agent)", cn, 2, "nginx worker", cx, r, "<= 0.9x nginx",
           at_most(r, 0.9))
for ref, target in (("nginx2", ">= 1.0x nginx2 (2 workers)"), ("nginx", ">= 1.0x nginx")):
    tv, nv = med("main", "natwrp", "rps"), med("main", ref, "rps")
    r = ratio(tv, nv)
    target_row("1 KiB GET req/s", tv, 0, ref, nv, r, target, at_least(r, 1.0))
tv, nv = med("main", "natwrp", "p99"), med("main", "nginx", "p99")
r = ratio(tv, nv)
target_row("1 KiB GET p99 ms", tv, 2, "nginx", nv, r, "<= 1.5x nginx", at_most(r, 1.5))
for m in ("down", "up"):
    tv, nv = med("main", "natwrp", m), med("main", "nginx", m)
    r = ratio(tv, nv)
    target_row(f"{meta.get('big_mib', '100')} MiB {m} MB/s", tv, 1, "nginx", nv, r, ">= 1.0x nginx",
               at_least(r, 1.0))
# The wss tunnel (natwrp-tls: plain client, wss tunnel), beside the single-core
# rate of the suite it negotiated (the cipher part; the slower of seal and open).
tc = tunnel_cipher()
cipher = min([v for v in (med("cipher", tc, "seal"), med("cipher", tc, "open")) if v is not None],
             default=None) if tc else None
for m in ("down", "up"):
    tv = med("main", "natwrp-tls", m)
    target_row(f"wss tunnel {meta.get('big_mib', '100')} MiB {m} MB/s", tv, 1,
               "cipher" if cipher is not None else "", cipher, ratio(tv, cipher), ">= 300 MB/s",
               None if tv is None else tv >= 300)
hi, hl = med("hol", "natwrp", "p99_idle"), med("hol", "natwrp", "p99_load")
ni, nl = med("hol", "nginx", "p99_idle"), med("hol", "nginx", "p99_load")
r, rn = ratio(hl, hi), ratio(nl, ni)
rows.append(["HOL p99 loaded/alone", fr(r), f"nginx {fr(rn)}", "-", "<= 2x and <= nginx's",
             verdict(None if r is None else r <= 2.0 and (rn is None or r <= rn))])
rd = ratio(med("hol", "direct", "p99_load"), med("hol", "direct", "p99_idle"))
if rd is not None:
    rows.append(["HOL p99 loaded/alone, no proxy", fr(rd), "(the same load)", "-", "-", "floor"])
for who in ("serve", "agent"):
    v = med("rss", f"{who}-natwrp", "idle")
    target_row(f"idle RSS {who} KiB", v, 0, "", None, None, "<= 4096 KiB", at_most(v, 4096))
if hold:
    N = hold.get("n", 0)
    for who in ("serve", "agent"):
        idle = med("rss", f"{who}-hold", "idle")
        during = hold.get("during", {}).get(who, {}).get("rss_kib")
        per = (during - idle) * 1024 / N if during is not None and idle is not None and N else None
        target_row(f"{who} bytes/open stream", per, 0, "", None, None, "<= 8192 B", at_most(per, 8192))
P(table(rows))
P("")

logsum = read("logsum").rstrip()
if logsum:
    P(logsum)
problems = [x for x in read("problems").splitlines() if x.strip()]
if problems:
    P(f"problems ({len(problems)}):")
    for x in problems:
        P(f"    {x}")
else:
    P("problems: none (every transfer 200 with exact sizes, no wrk socket errors, no process died)")
print("\n".join(lines))
