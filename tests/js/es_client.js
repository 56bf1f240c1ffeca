// The real "eventsource" package (the browser's EventSource API for Node)
// through wsgate: reads events until it has <total>, across the reconnects
// the server forces, and prints what it got as one JSON line.
"use strict";
const { EventSource } = require("eventsource");

const url = process.argv[2];
const total = parseInt(process.argv[3] || "9", 10);
const got = [];
const errors = [];
let opens = 0;
// With "cookies" as argv[4], a cookie jar plays the browser's part: the
// Set-Cookie of a response goes back on every reconnect.
let jar = "";
const fetchWithJar = async (u, init) => {
  const headers = Object.assign({}, init && init.headers);
  if (jar) headers.cookie = jar;
  const res = await fetch(u, Object.assign({}, init, { headers }));
  const set = res.headers.getSetCookie();
  if (set.length) jar = set.map((c) => c.split(";")[0]).join("; ");
  return res;
};
const es = process.argv[4] === "cookies" ? new EventSource(url, { fetch: fetchWithJar }) : new EventSource(url);
const deadline = setTimeout(() => finish("timeout"), 15000);

function finish(why) {
  clearTimeout(deadline);
  es.close();
  process.stdout.write(JSON.stringify({ why, got, opens, errors }) + "\n");
  process.exit(0);
}

es.onopen = () => { opens++; };
es.onerror = (e) => { if (e && e.code) errors.push(e.code); };
es.onmessage = (m) => {
  got.push({ id: m.lastEventId, data: m.data });
  if (got.length === total) finish("done");
};
