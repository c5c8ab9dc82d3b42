// test/apps/sio_client.js: socket.io-client scenarios against app.js, run
// through natwrp by test_j3_express.
//
//   node sio_client.js URL suite TRANSPORTS   one client: events both ways,
//                                             acks, binary, 5 MB each way,
//                                             a server-initiated disconnect
//   node sio_client.js URL many N             N clients at once, each acked,
//                                             then one broadcast reaches all
//   node sio_client.js URL reconnect          prints its state changes as
//                                             lines; the test restarts the
//                                             agent meanwhile
//
// TRANSPORTS is "default" (long-polling, then the WebSocket upgrade) or
// "websocket". Prints "ok JSON" and exits 0, or "fail REASON" and exits 1.
// For https:// URLs NODE_EXTRA_CA_CERTS names the test CA.
"use strict";

const crypto = require("crypto");
const { io } = require("socket.io-client");

const [url, mode, extra] = process.argv.slice(2);

function done(ok, what) {
    console.log(`${ok ? "ok" : "fail"} ${typeof what === "string" ? what : JSON.stringify(what)}`);
    process.exit(ok ? 0 : 1);
}

function opts(transports) {
    const o = { reconnection: false, timeout: 10000 };
    if (transports === "websocket") o.transports = ["websocket"];
    return o;
}

// Resolves with the first of event's arguments, or rejects after ms.
function once(emitter, event, ms = 15000) {
    return new Promise((resolve, reject) => {
        const t = setTimeout(() => reject(new Error(`no ${event} in ${ms} ms`)), ms);
        emitter.once(event, (...a) => { clearTimeout(t); resolve(a); });
    });
}

function ack(socket, ...args) {
    return socket.timeout(20000).emitWithAck(...args);
}

function pattern(n, seed) {
    const b = Buffer.alloc(n);
    for (let i = 0; i < n; i++) b[i] = (i * 31 + seed) & 0xff;
    return b;
}

const sha = (b) => crypto.createHash("sha256").update(b).digest("hex");

async function suite(transports) {
    const s = io(url, opts(transports));
    const out = { transports: [] };
    s.io.on("open", () => out.transports.push(s.io.engine.transport.name));
    s.io.on("error", (e) => done(false, `manager error: ${e.message}`));
    const [welcome] = await once(s, "welcome");
    out.welcome_transport = welcome.transport;
    if (transports === "default") {
        // The engine exists once connected; wait for its upgrade to WebSocket.
        if (s.io.engine.transport.name !== "websocket") await once(s.io.engine, "upgrade");
        out.upgraded_to = s.io.engine.transport.name;
    }
    out.server_transport = await ack(s, "upgraded?");
    // Events both ways without acks: the server emits "echo" back.
    const back = once(s, "echo");
    s.emit("echo", { hello: "world", n: [1, 2, 3] });
    out.echo_event = (await back)[0];
    out.echo_ack = await ack(s, "echo", { unicode: "h\u00e9llo \u2603", big: "y".repeat(70000) });
    out.echo_ack.big = out.echo_ack.big.length;
    // Binary both ways.
    const small = pattern(1000, 1);
    const info = await ack(s, "bin", small);
    out.bin = { size: info.size, ok: info.sha256 === sha(small) &&
                Buffer.from(info.reversed).equals(Buffer.from(small).reverse()) };
    // 5 MB each way.
    const five = pattern(5 * 1024 * 1024, 7);
    const info5 = await ack(s, "bin", five);
    out.up5 = { size: info5.size, ok: info5.sha256 === sha(five) &&
                Buffer.from(info5.reversed).equals(Buffer.from(five).reverse()) };
    const down = await ack(s, "big", 5 * 1024 * 1024);
    const want = Buffer.alloc(5 * 1024 * 1024);
    for (let i = 0; i < want.length; i++) want[i] = (i * 7 + 3) & 0xff;
    out.down5 = { size: down.length, ok: Buffer.from(down).equals(want) };
    // The server ends the session.
    const gone = once(s, "disconnect");
    s.emit("kick");
    out.disconnect = (await gone)[0];
    done(true, out);
}

async function many(n) {
    const sockets = [];
    for (let i = 0; i < n; i++) sockets.push(io(url, { ...opts("default"), forceNew: true }));
    await Promise.all(sockets.map((s) => once(s, "welcome", 30000)));
    const acks = await Promise.all(sockets.map((s, i) => ack(s, "echo", { i })));
    const okAcks = acks.filter((a, i) => a.i === i).length;
    const news = Promise.all(sockets.map((s) => once(s, "news", 30000)));
    sockets[0].emit("broadcast", "to all");
    const got = (await news).filter(([m]) => m === "to all").length;
    sockets.forEach((s) => s.close());
    done(true, { clients: n, acks: okAcks, broadcast: got });
}

function reconnect() {
    const s = io(url, { reconnectionDelay: 200, reconnectionDelayMax: 1000, timeout: 5000 });
    let first = true;
    s.on("welcome", async (w) => {
        // Report once on WebSocket (after the upgrade from long-polling),
        // so that the restart cuts a WebSocket, not a poll in flight.
        const engine = s.io.engine;
        if (engine.transport.name !== "websocket") await once(engine, "upgrade");
        console.log(`${first ? "connected" : "reconnected"} ${w.id} ${engine.transport.name}`);
        if (!first) {
            const r = await ack(s, "echo", { after: "restart" });
            done(r.after === "restart", { echo: r });
        }
        first = false;
    });
    s.on("disconnect", (reason) => console.log(`disconnect ${reason}`));
    setTimeout(() => done(false, "no reconnect in 50 s"), 50000);
}

process.on("unhandledRejection", (e) => done(false, String(e && e.message || e)));
if (mode === "suite") suite(extra || "default");
else if (mode === "many") many(Number(extra || 50));
else if (mode === "reconnect") reconnect();
else done(false, `unknown mode ${mode}`);
