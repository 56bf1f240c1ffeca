// N SockJS servers (the real "sockjs" package) on free loopback ports, prefix
// /echo. Each answers every message with {"name", "data"} so that the test
// sees which backend served it. Prints {"ports": [...]} when all listen.
"use strict";
const http = require("http");
const sockjs = require("sockjs");

const n = parseInt(process.argv[2] || "3", 10);
const ports = [];
let ready = 0;
for (let i = 0; i < n; i++) {
  const name = `sockjs-${i}`;
  const echo = sockjs.createServer({ prefix: "/echo", log: () => {}, heartbeat_delay: 2000 });
  echo.on("connection", (conn) => {
    conn.on("data", (data) => conn.write(JSON.stringify({ name, data })));
  });
  const srv = http.createServer();
  echo.installHandlers(srv);
  srv.listen(0, "127.0.0.1", () => {
    ports[i] = srv.address().port;
    if (++ready === n) process.stdout.write(JSON.stringify({ ports }) + "\n");
  });
}
process.on("SIGTERM", () => process.exit(0));
