// N Socket.IO servers (the real "socket.io" package) on free loopback ports.
// Prints one JSON line {"ports": [...]} when all listen; each server answers
// "whoami" with its name and reports every connection's transport upgrades
// on stdout as JSON lines, so the test sees where each client's session was.
"use strict";
const http = require("http");
const { Server } = require("socket.io");

const n = parseInt(process.argv[2] || "3", 10);
const PAGE = `<!doctype html><meta charset="utf-8"><title>sio</title>
<script src="/socket.io/socket.io.js"></script>
<script>
  window.sio = { page: "@NAME@", transports: [], backend: null, error: null, answers: [] };
  const socket = io();
  // The engine's first transport, then its upgrade, watched from the start
  // (the upgrade may come before the "connect" handlers run).
  socket.io.on("open", () => {
    const engine = socket.io.engine;
    window.sio.transports.push(engine.transport.name);
    engine.on("upgrade", (t) => {
      window.sio.transports.push(t.name);
      socket.emit("whoami", (r) => { window.sio.upgraded = r; window.sio.answers.push("upgraded"); });
    });
  });
  // The order the answers came in ("answers") shows in a failed assertion.
  socket.on("connect", () => socket.emit("whoami", (r) => { window.sio.backend = r.name; window.sio.answers.push("backend"); }));
  socket.on("connect_error", (e) => { window.sio.error = String(e); });
</script>`;
const ports = [];
const servers = [];
let ready = 0;
for (let i = 0; i < n; i++) {
  const name = `sio-${i}`;
  const srv = http.createServer((req, res) => {
    if (req.url === "/page") {
      // A browser page of the application: the socket.io client from this
      // very server, default transports (polling, then the upgrade).
      res.writeHead(200, { "Content-Type": "text/html; charset=utf-8" });
      res.end(PAGE.replace("@NAME@", name));
      return;
    }
    res.writeHead(200, { "Content-Type": "text/plain" });
    res.end(name);
  });
  const io = new Server(srv, { pingInterval: 2000, pingTimeout: 5000 });
  const sockets = new Set();
  srv.on("connection", (s) => { sockets.add(s); s.on("close", () => sockets.delete(s)); });
  servers[i] = { srv, io, sockets };
  io.on("connection", (socket) => {
    const user = socket.handshake.query.user;
    socket.on("whoami", (cb) => cb({ name, user, transport: socket.conn.transport.name }));
    socket.conn.on("upgrade", (t) =>
      process.stdout.write(JSON.stringify({ event: "upgrade", name, user, to: t.name }) + "\n"));
    process.stdout.write(JSON.stringify({ event: "connection", name, user }) + "\n");
  });
  srv.listen(0, "127.0.0.1", () => {
    ports[i] = srv.address().port;
    if (++ready === n) process.stdout.write(JSON.stringify({ ports }) + "\n");
  });
}
// "kill I" on stdin: server I dies as a crashed process would, every
// connection reset, its port closed (a backend killed mid-session).
let input = "";
process.stdin.on("data", (d) => {
  input += d;
  let nl;
  while ((nl = input.indexOf("\n")) >= 0) {
    const [cmd, arg] = input.slice(0, nl).trim().split(" ");
    input = input.slice(nl + 1);
    const s = servers[parseInt(arg, 10)];
    if (cmd === "kill" && s) {
      s.srv.close();
      for (const c of s.sockets) c.destroy();
      process.stdout.write(JSON.stringify({ event: "killed", name: `sio-${arg}` }) + "\n");
    }
  }
});
process.on("SIGTERM", () => process.exit(0));
