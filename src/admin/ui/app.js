/* natwrp dashboard: polls /api/status every second (rates and sparklines
 * from counter deltas) and, on an agent, /api/requests for the request
 * inspector. No framework, no external assets; every value from the
 * network goes into the page as text (textContent), never as HTML. */
"use strict";

const POLL_MS = 1000;
const HIST = 60; /* sparkline points: one a second */
const MAX_REQS = 200;

const $ = (id) => document.getElementById(id);

function el(tag, props, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(props || {})) {
    if (k === "class") e.className = v;
    else if (k === "text") e.textContent = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const c of kids) if (c != null) e.append(c instanceof Node ? c : String(c));
  return e;
}

function fmtBytes(n) {
  if (!isFinite(n)) return "-";
  const u = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return (i ? n.toFixed(1) : Math.round(n)) + " " + u[i];
}
function fmtRate(n) { return n >= 100 ? n.toFixed(0) : n >= 10 ? n.toFixed(1) : n.toFixed(2); }
function fmtDur(s) {
  s = Math.floor(s);
  const d = Math.floor(s / 86400), h = Math.floor(s / 3600) % 24, m = Math.floor(s / 60) % 60;
  return d ? `${d}d ${h}h` : h ? `${h}h ${m}m` : m ? `${m}m ${s % 60}s` : `${s} s`;
}
function statusClass(st) {
  return !st ? "" : st < 300 ? "st-ok" : st < 400 ? "st-redir" : "st-bad";
}

/* Sparkline into an <svg> from an array of values. */
function spark(svg, vals) {
  const max = Math.max(1e-9, ...vals);
  const pts = vals.map((v, i) =>
    `${(i * 120) / (HIST - 1)},${(23 - (v / max) * 22).toFixed(2)}`).join(" ");
  let pl = svg.querySelector("polyline");
  if (!pl) {
    pl = document.createElementNS("http://www.w3.org/2000/svg", "polyline");
    svg.append(pl);
  }
  pl.setAttribute("points", pts);
}
function sparkSvg(vals, cls) {
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("viewBox", "0 0 120 24");
  svg.setAttribute("preserveAspectRatio", "none");
  svg.setAttribute("class", "spark" + (cls ? " " + cls : ""));
  spark(svg, vals);
  return svg;
}

/* Rates from counter deltas, per key ("" = the totals, else a route). */
const series = new Map();
let lastT = 0;
function track(key, c, dt) {
  let s = series.get(key);
  if (!s) {
    s = { prev: c, req: Array(HIST).fill(0), err: Array(HIST).fill(0), rate: {} };
    series.set(key, s);
  }
  const d = (k) => dt > 0 ? Math.max(0, (c[k] || 0) - (s.prev[k] || 0)) / dt : 0;
  s.rate = { req: d("requests"), err: d("errors"), in: d("bytes_in"), out: d("bytes_out") };
  s.req.push(s.rate.req); s.req.shift();
  s.err.push(s.rate.err); s.err.shift();
  s.prev = c;
  return s;
}

let role = "";

function renderStatus(st) {
  const now = performance.now() / 1000;
  const dt = lastT ? now - lastT : 0;
  lastT = now;
  role = st.role;
  $("role").textContent = st.role;
  $("ident").textContent = (st.agent ? "agent " + st.agent + " \u2192 " + st.local + "  " : "") +
    "v" + st.version;
  const r = $("ready");
  r.textContent = st.ready ? "ready" : "not ready: " + (st.ready_reason || "?");
  r.className = "badge " + (st.ready ? "ok" : "bad");
  document.title = "natwrp " + st.role + (st.agent ? " " + st.agent : "");

  const tot = track("", st, dt);
  $("total-requests").textContent = st.requests;
  $("total-errors").textContent = st.errors;
  $("rate").textContent = fmtRate(tot.rate.req);
  $("err-rate").textContent = fmtRate(tot.rate.err);
  $("bps-in").textContent = fmtBytes(tot.rate.in);
  $("bps-out").textContent = fmtBytes(tot.rate.out);
  spark($("spark-rate"), tot.req);
  spark($("spark-err"), tot.err);
  $("uptime").textContent = fmtDur(st.uptime_seconds || 0);
  if (st.role === "serve") {
    $("extra-k").textContent = "streams / conns";
    $("extra").textContent = `${st.streams} / ${st.connections}`;
  } else {
    $("extra-k").textContent = "in flight / pool";
    $("extra").textContent = `${st.inflight} / ${st.pool ? st.pool.in_use + "+" + st.pool.idle : "-"}`;
  }

  const rb = $("routes").tBodies[0];
  rb.replaceChildren();
  if (st.role === "serve") {
    for (const rt of st.routes || []) {
      const s = track("r:" + rt.route, rt, dt);
      const state = rt.tunnels > 0 ? "open" : rt.held ? "held" : "down";
      rb.append(el("tr", { "data-route": rt.route },
        el("td", { text: rt.route }),
        el("td", { class: "state-" + state, text: `${state} (${rt.tunnels} tunnel${rt.tunnels === 1 ? "" : "s"})` }),
        el("td", { class: "route-requests", text: rt.requests }), el("td", { text: rt.errors }),
        el("td", { class: "spark-cell" }, fmtRate(s.rate.req) + " ", sparkSvg(s.req)),
        el("td", { class: "spark-cell" }, fmtRate(s.rate.err) + " ", sparkSvg(s.err, "err")),
        el("td", { text: fmtBytes(s.rate.in) }), el("td", { text: fmtBytes(s.rate.out) })));
    }
  } else {
    const up = (st.tunnels || []).some((t) => t.state === "up");
    const routes = st.routes && st.routes.length ? st.routes : ["(default route)"];
    routes.forEach((u, i) => {
      rb.append(el("tr", { "data-route": u },
        el("td", { text: u }), el("td", { class: up ? "state-up" : "state-down", text: up ? "up" : "down" }),
        el("td", { class: "route-requests", text: i ? "" : st.requests }), el("td", { text: i ? "" : st.errors }),
        el("td", { class: "spark-cell" }, i ? "" : fmtRate(tot.rate.req) + " ", i ? null : sparkSvg(tot.req)),
        el("td", { class: "spark-cell" }, i ? "" : fmtRate(tot.rate.err) + " ", i ? null : sparkSvg(tot.err, "err")),
        el("td", { text: i ? "" : fmtBytes(tot.rate.in) }), el("td", { text: i ? "" : fmtBytes(tot.rate.out) })));
    });
  }

  const th = $("tunnels-head"), tb = $("tunnels").tBodies[0];
  const cols = st.role === "serve"
    ? ["id", "agent", "group", "routes", "peer", "state", "since", "streams", "in", "out", "last error"]
    : ["id", "name", "remote", "state", "since", "streams", "last error"];
  if (th.childElementCount !== cols.length) th.replaceChildren(...cols.map((c) => el("th", { text: c })));
  tb.replaceChildren();
  const nowS = Date.now() / 1000;
  for (const t of st.tunnels || []) {
    const since = t.since ? fmtDur(Math.max(0, nowS - t.since)) + " ago" : "-";
    const cells = st.role === "serve"
      ? [t.id, t.agent, t.group, (t.routes || []).join(", "), t.peer, t.state, since, t.streams,
         fmtBytes(t.bytes_in), fmtBytes(t.bytes_out), t.last_error || ""]
      : [t.id, t.name, t.remote, t.state, since, t.streams, t.last_error || ""];
    tb.append(el("tr", { "data-tunnel": t.id },
      ...cells.map((c, i) => el("td", cols[i] === "state" ? { class: "state-" + c, text: c } : { text: c }))));
  }
  if (st.role === "agent") $("inspector").hidden = false;
  if (st.role === "agent" && !st.inspect) $("inspect-note").textContent = "(off: INSPECT=0)";
}

/* ----------------------------------------------------------- inspector */

let reqs = [];      /* summaries, oldest first */
let lastId = 0;
let selected = 0;

function matches(q, r) {
  if (!q) return true;
  q = q.toLowerCase();
  return (r.method + " " + r.target + " " + r.status + " " + r.state).toLowerCase().includes(q);
}

function renderList() {
  const q = $("filter").value.trim();
  const tb = $("req-list").tBodies[0];
  const shown = reqs.filter((r) => matches(q, r)).reverse(); /* newest on top */
  tb.replaceChildren(...shown.map((r) => el("tr", {
      "data-id": r.id, class: r.id === selected ? "sel" : "", onclick: () => select(r.id) },
    el("td", { text: r.id }),
    el("td", { text: new Date(r.time * 1000).toLocaleTimeString() }),
    el("td", { text: r.method }),
    el("td", { class: "path", title: r.target, text: r.target }),
    el("td", { class: statusClass(r.status), text: r.state === "failed" ? "failed" : r.status || "\u2026" }),
    el("td", { text: r.duration_seconds == null ? "" : (r.duration_seconds * 1000).toFixed(1) }),
    el("td", { text: fmtBytes(r.request_bytes) }),
    el("td", { text: fmtBytes(r.response_bytes) }))));
  $("req-count").textContent = `${shown.length} of ${reqs.length} shown`;
}

function hdrsPre(h) {
  return el("pre", { class: "headers", text: (h || []).map(([n, v]) => n + ": " + v).join("\n") || "(none)" });
}
function bodyPre(b) {
  if (!b || !b.size) return el("pre", { class: "body", text: "(empty)" });
  let t;
  if (b.text) {
    t = b.text;
    if (b.truncated) t += `\n\u2026 (${b.size} bytes in all; the first 64 KiB shown)`;
  } else if (b.hex) {
    t = "hex: " + b.hex.replace(/(..)/g, "$1 ").trim();
    if (b.size > b.hex.length / 2) t += `\n\u2026 (${b.size} bytes in all; the first ${b.hex.length / 2} shown)`;
  } else {
    t = `(${b.size} bytes, not captured: no dashboard was open)`;
  }
  return el("pre", { class: "body", text: t });
}
function side(title, status, x) {
  return el("div", { class: "side" },
    el("h3", { text: `${title}: ` }, el("span", { class: "status " + statusClass(status), text: status || "-" })),
    hdrsPre(x.headers), el("h3", { text: "body" }), bodyPre(x.body));
}

async function select(id) {
  selected = id;
  renderList();
  const d = $("detail");
  let c;
  try {
    const res = await fetch("/api/requests/" + id);
    if (!res.ok) { d.replaceChildren(el("p", { class: "muted", text: `request ${id}: ${res.status}` })); return; }
    c = await res.json();
  } catch (e) { return; }
  if (selected !== id) return;
  const btn = el("button", { id: "replay", onclick: () => replay(id, btn) }, "Replay");
  if (!c.replayable) {
    btn.disabled = true;
    btn.title = "its body was not captured whole";
  }
  d.replaceChildren(
    el("div", { class: "bar" }, el("strong", { text: `${c.method} ${c.target}` }), btn),
    el("div", { class: "muted", text: `#${c.id} \u00b7 ${c.state}` + (c.error ? " \u00b7 " + c.error : "") +
      (c.duration_seconds != null ? ` \u00b7 ${(c.duration_seconds * 1000).toFixed(1)} ms` : "") }),
    el("h3", { text: "request headers" }), hdrsPre(c.request.headers),
    el("h3", { text: "request body" }), bodyPre(c.request.body),
    el("div", { id: "replay-result" }),
    el("h3", { text: "response " }, el("span", { class: statusClass(c.status), text: c.status || "-" })),
    hdrsPre(c.response.headers),
    el("h3", { text: "response body" }), bodyPre(c.response.body));
}

async function replay(id, btn) {
  const out = $("replay-result");
  btn.disabled = true;
  out.replaceChildren(el("p", { class: "muted", text: "replaying\u2026" }));
  try {
    const res = await fetch(`/api/requests/${id}/replay`, { method: "POST" });
    const j = await res.json().catch(() => ({ error: "HTTP " + res.status }));
    if (!res.ok || j.error) {
      out.replaceChildren(el("p", { class: "st-bad replay-error", text: `replay failed (${res.status}): ${j.error || ""}` }));
    } else {
      const old = j.old || { status: 0, response: {} };
      out.replaceChildren(el("h3", { text: "Replay: old and new" }), el("div", { class: "cols" },
        side("old", old.status, old.response || {}),
        el("div", { class: "new" }, side("new", j.new.status, j.new),
          el("div", { class: "muted", text: `${(j.new.duration_seconds * 1000).toFixed(1)} ms` }))));
    }
  } catch (e) {
    out.replaceChildren(el("p", { class: "st-bad", text: "replay failed: " + e }));
  }
  btn.disabled = false;
}

async function pollRequests() {
  const res = await fetch("/api/requests?after=" + lastId);
  if (!res.ok) return;
  const j = await res.json();
  if (!j.inspect) { $("inspect-note").textContent = "(off: INSPECT=0)"; return; }
  /* Entries still in flight come again once they end: replace them. */
  const byId = new Map(reqs.map((r) => [r.id, r]));
  for (const r of j.requests) byId.set(r.id, r);
  reqs = [...byId.values()].sort((a, b) => a.id - b.id).slice(-MAX_REQS);
  const pending = reqs.find((r) => r.state === "pending");
  lastId = pending ? pending.id - 1 : j.last;
  renderList();
}

async function tick() {
  try {
    const res = await fetch("/api/status");
    if (!res.ok) throw new Error("HTTP " + res.status);
    renderStatus(await res.json());
    if (role === "agent") await pollRequests();
    $("conn").textContent = "updated " + new Date().toLocaleTimeString();
  } catch (e) {
    $("conn").textContent = "cannot reach the admin listener: " + e.message;
  }
  setTimeout(tick, POLL_MS);
}

$("filter").addEventListener("input", renderList);
tick();
