// M SockJS clients (the real "sockjs-client" package) over one transport
// (argv[4]: xhr-streaming or xhr-polling). Node's sockjs-client keeps no
// cookies, so a jar per SockJS session (keyed by the session id in its
// URLs, /echo/SERVER/SESSION/...) plays the browser's part: wsgate's
// Set-Cookie is sent back on the session's later requests. Each client
// sends 5 messages and prints which backend echoed each.
"use strict";
const http = require("http");

const jars = new Map();
const request = http.request;
http.request = function (options, cb) {
  const m = /^\/echo\/[^/]+\/([^/]+)\//.exec(options.path || "");
  const sid = m && m[1];
  if (sid && jars.has(sid)) options.headers = Object.assign({}, options.headers, { cookie: jars.get(sid) });
  return request.call(http, options, (res) => {
    const set = res.headers["set-cookie"];
    if (sid && set) jars.set(sid, set.map((c) => c.split(";")[0]).join("; "));
    if (cb) cb(res);
  });
};
const SockJS = require("sockjs-client");

const url = process.argv[2];
const m = parseInt(process.argv[3] || "20", 10);
const transport = process.argv[4] || "xhr-streaming";
const deadline = setTimeout(() => finish("timeout"), 30000);
const results = {};
let done = 0;

function finish(why) {
  clearTimeout(deadline);
  process.stdout.write(JSON.stringify({ why, results, jars: jars.size }) + "\n");
  process.exit(0);
}

for (let i = 0; i < m; i++) {
  const user = `user${i}`;
  const r = (results[user] = { answers: [], errors: [] });
  const sock = new SockJS(url, null, { transports: [transport] });
  let k = 0;
  const next = () => sock.send(`${user}-${k++}`);
  sock.onopen = () => { r.transport = sock.transport; next(); };
  sock.onmessage = (e) => {
    r.answers.push(JSON.parse(e.data));
    if (k < 5) return next();
    sock.close();
    if (++done === m) finish("done");
  };
  sock.onclose = (e) => { if (e.code !== 1000) r.errors.push(`close ${e.code} ${e.reason}`); };
}
