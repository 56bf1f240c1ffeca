// M Socket.IO clients that keep their session on one backend by wsgate's
// sticky cookie alone: withCredentials gives each engine a cookie jar in
// Node (as a browser's cookies), which sends wsg=... on every polling
// request and on the upgrade. Each client asks "whoami" 4 times (across the
// upgrade with the default transports) and the answers say which backend
// served them. With "kill" as argv[5], the script then prints
// {"phase": "ready"} and waits for a line on stdin (the test kills a
// backend), lets its clients reconnect, and asks 4 times again.
"use strict";
const { io } = require("socket.io-client");

const url = process.argv[2];
const m = parseInt(process.argv[3] || "20", 10);
const transports = (process.argv[4] || "polling,websocket").split(",");
const kill = process.argv[5] === "kill";
const deadline = setTimeout(() => finish("timeout"), 40000);
const results = {};
const socks = [];

function ask(sock) {
  return new Promise((resolve) => sock.timeout(5000).emit("whoami", (err, r) => resolve(err ? { error: String(err) } : r)));
}

function finish(why) {
  clearTimeout(deadline);
  process.stdout.write(JSON.stringify({ why, results }) + "\n");
  for (const s of socks) s.disconnect();
  process.exit(0);
}

async function round(sock, r, key) {
  const engine = sock.io.engine;
  r[key] = [await ask(sock)];
  if (engine.transport.name !== "websocket" && transports.includes("websocket")) {
    await new Promise((resolve) => {
      const t = setTimeout(resolve, 5000);
      engine.once("upgrade", () => { clearTimeout(t); resolve(); });
    });
  }
  for (let k = 0; k < 3; k++) r[key].push(await ask(sock));
  r[key + "_transport"] = engine.transport.name;
}

function connected(sock) {
  return new Promise((resolve) => (sock.connected ? resolve() : sock.once("connect", resolve)));
}

async function client(i) {
  const user = `user${i}`;
  const r = (results[user] = { errors: [], disconnects: 0 });
  const sock = io(url, {
    query: { user }, transports, withCredentials: true,
    reconnection: kill, reconnectionDelay: 100, reconnectionDelayMax: 300,
  });
  socks.push(sock);
  sock.on("connect_error", (e) => r.errors.push(`connect_error: ${e.message}`));
  sock.on("disconnect", (why) => { r.disconnects++; r.last_disconnect = why; });
  await connected(sock);
  await round(sock, r, "before");
}

async function main() {
  await Promise.all([...Array(m).keys()].map(client));
  if (!kill) return finish("done");
  process.stdout.write(JSON.stringify({ phase: "ready", results }) + "\n");
  await new Promise((resolve) => process.stdin.once("data", resolve));
  // Every client whose backend died reconnects; the others carry on.
  await Promise.all(socks.map(async (sock, i) => {
    const r = results[`user${i}`];
    await new Promise((resolve) => setTimeout(resolve, 300));
    await connected(sock);
    await round(sock, r, "after");
  }));
  finish("done");
}
main();
