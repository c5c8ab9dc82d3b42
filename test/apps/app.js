// test/apps/app.js: an Express + socket.io application as a user would publish
// it through natwrp (test_j3_express runs it behind an agent).
//
//   node app.js --static DIR [--port N]
//
// Prints "app listening PORT" once it accepts connections. Everything a
// typical Node app does over HTTP is here: static files (ETag,
// Last-Modified, Range, HEAD), compression, redirects, cookies, chunked
// streaming, Server-Sent Events, JSON and multipart bodies, and socket.io
// on the same server.
"use strict";

const crypto = require("crypto");
const http = require("http");
const path = require("path");
const busboy = require("busboy");
const compression = require("compression");
const express = require("express");
const { Server } = require("socket.io");

function arg(name, dflt) {
    const i = process.argv.indexOf(name);
    return i >= 0 ? process.argv[i + 1] : dflt;
}

const staticDir = path.resolve(arg("--static", path.join(__dirname, "public")));
const app = express();
// Compression for every response that is worth it (text, JSON, SSE); the
// client chooses gzip or deflate by Accept-Encoding.
app.use(compression({ threshold: 512 }));
app.use("/static", express.static(staticDir, { etag: true, lastModified: true }));
app.use("/pages", express.static(path.join(__dirname, "public")));

app.get("/text", (req, res) => {
    res.type("text/plain").send("natwrp compressible line\n".repeat(2000));
});

// A redirect to a relative URL, and one to the service's own absolute URL
// (built from Host, as frameworks do): the proxy must hand the client a URL
// it can follow.
app.get("/redirect/relative", (req, res) => res.redirect(302, "/target?from=relative"));
app.get("/redirect/absolute", (req, res) =>
    res.redirect(302, `${req.protocol}://${req.get("host")}/target?from=absolute`));
app.get("/target", (req, res) => res.json({ target: true, query: req.query }));

// 103 Early Hints, then the page: the browser may fetch the stylesheet
// while the server still works on the response.
app.get("/early-hints", (req, res) => {
    res.writeEarlyHints({ link: ["</static/style.css>; rel=preload; as=style",
                                 "</static/app.js>; rel=preload; as=script"] });
    setTimeout(() => res.type("html").send("<!doctype html><p>hinted</p>\n"), 50);
});

app.get("/cookies", (req, res) => {
    res.cookie("a", "1", { path: "/" });
    res.cookie("b", "two words", { httpOnly: true });
    res.cookie("c", "3", { maxAge: 60000, sameSite: "lax" });
    res.json({ cookies: 3, got: req.headers.cookie || null });
});

// Chunked streaming: pieces written over time, no Content-Length.
app.get("/stream", (req, res) => {
    const n = Number(req.query.n || 10);
    res.type("text/plain");
    let i = 0;
    const tick = () => {
        if (i === n) return res.end(`done ${n}\n`);
        res.write(`chunk ${i++} ${"x".repeat(100)}\n`);
        if (res.flush) res.flush(); // compression: push what we have
        setTimeout(tick, 20);
    };
    tick();
});

// Server-Sent Events: one event every 100 ms until the client leaves.
app.get("/sse", (req, res) => {
    res.set({ "Content-Type": "text/event-stream", "Cache-Control": "no-cache" });
    res.flushHeaders();
    let id = 0;
    const send = () => {
        id++;
        res.write(`id: ${id}\nevent: tick\ndata: {"n":${id}}\n\n`);
        if (res.flush) res.flush();
    };
    send();
    const timer = setInterval(send, 100);
    req.on("close", () => clearInterval(timer));
});

app.post("/api/json", express.json({ limit: "2mb" }), (req, res) => {
    res.status(201).json({ received: req.body, type: req.get("content-type") });
});

// Multipart upload, streamed: each file's size and SHA-256.
app.post("/upload", (req, res) => {
    const files = [];
    const fields = {};
    let bb;
    try {
        bb = busboy({ headers: req.headers, limits: { fileSize: 1 << 30 } });
    } catch (e) {
        return res.status(400).json({ error: String(e) });
    }
    bb.on("file", (name, stream, info) => {
        const h = crypto.createHash("sha256");
        let size = 0;
        stream.on("data", (d) => { h.update(d); size += d.length; });
        stream.on("end", () => files.push({ name, filename: info.filename, size,
                                            sha256: h.digest("hex") }));
    });
    bb.on("field", (name, val) => { fields[name] = val; });
    bb.on("close", () => res.json({ files, fields }));
    bb.on("error", (e) => res.status(400).json({ error: String(e) }));
    req.pipe(bb);
});

const server = http.createServer(app);
const io = new Server(server, { maxHttpBufferSize: 8e6 });

io.on("connection", (socket) => {
    socket.emit("welcome", { id: socket.id, transport: socket.conn.transport.name });
    socket.on("echo", (data, ack) => {
        if (typeof ack === "function") ack(data);
        else socket.emit("echo", data);
    });
    // Binary both ways: the server answers with the bytes reversed and its hash.
    socket.on("bin", (buf, ack) => {
        const b = Buffer.from(buf);
        ack({ size: b.length, sha256: crypto.createHash("sha256").update(b).digest("hex"),
              reversed: Buffer.from(b).reverse() });
    });
    // A large message from the server.
    socket.on("big", (n, ack) => {
        const b = Buffer.alloc(n);
        for (let i = 0; i < n; i++) b[i] = (i * 7 + 3) & 0xff;
        ack(b);
    });
    socket.on("upgraded?", (ack) => ack(socket.conn.transport.name));
    socket.on("kick", () => socket.disconnect(true));
    socket.on("broadcast", (msg) => io.emit("news", msg));
});

server.listen(Number(arg("--port", 0)), "127.0.0.1", () => {
    console.log(`app listening ${server.address().port}`);
});
