// M Socket.IO clients (the real "socket.io-client" package) through wsgate
// with the default transports: HTTP long polling first, then the upgrade to
// WebSocket. Each client asks "whoami" while polling and again after the
// upgrade; prints one JSON line with every client's answers and errors.
"use strict";
const { io } = require("socket.io-client");

const url = process.argv[2];
const m = parseInt(process.argv[3] || "20", 10);
const transports = (process.argv[4] || "polling,websocket").split(",");
const deadline = setTimeout(() => finish("timeout"), 20000);
const results = {};
let done = 0;

function ask(sock) {
  return new Promise((resolve) => sock.timeout(5000).emit("whoami", (err, r) => resolve(err ? { error: String(err) } : r)));
}

function finish(why) {
  clearTimeout(deadline);
  process.stdout.write(JSON.stringify({ why, results }) + "\n");
  process.exit(0);
}

for (let i = 0; i < m; i++) {
  const user = `user${i}`;
  const r = (results[user] = { answers: [], errors: [] });
  const sock = io(url, { query: { user }, transports, reconnection: false });
  // The engine opens on its first transport (the handshake), before any upgrade.
  sock.io.on("open", () => { r.first = sock.io.engine.transport.name; });
  sock.on("connect_error", (e) => r.errors.push(`connect_error: ${e.message}`));
  sock.on("disconnect", (why) => { if (why !== "io client disconnect") r.errors.push(`disconnect: ${why}`); });
  sock.on("connect", async () => {
    const engine = sock.io.engine;
    r.answers.push(await ask(sock));
    if (engine.transport.name !== "websocket" && transports.includes("websocket")) {
      await new Promise((resolve) => {
        const t = setTimeout(resolve, 5000);
        engine.once("upgrade", () => { clearTimeout(t); resolve(); });
      });
    }
    for (let k = 0; k < 3; k++) r.answers.push(await ask(sock));
    r.final = engine.transport.name;
    sock.disconnect();
    if (++done === m) finish("done");
  });
}
