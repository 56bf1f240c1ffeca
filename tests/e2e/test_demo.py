"""The demo of `make run` (issue 9 part 6): the echo backend's plain-HTTP side
(bench/demo_http.c) directly and through wsgate, `make run`'s configuration
and script, and the page in headless Chromium through wsgate.

The backend's endpoints: GET / (the page), /events (SSE: hello, replay after
Last-Event-ID, ticks, messages), /poll?since=N (held until a message or
--poll-ms), POST /messages, WebSocket /chat (its text messages are echoed
and posted), 404/405/426, HEAD, keep-alive and pipelining, X-Backend on every
response. Through wsgate the same requests pass one route (routes[].http)
and land, with the pool's query:user key, on the backend the user hashes to
(asked from `wsgate --which`, so the outcome is certain).
"""

import base64
import hashlib
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from conftest import (ROOT, WSGATE_BIN, Proc, can_connect, free_port, make_config, pool, run,
                      wait_for, wsc)
from wsg_browser import CHROMIUM, Browser, BrowserError
from wsg_raw import connect

TICK_MS = 200
POLL_MS = 1500
ARGS = ("--tick-ms", str(TICK_MS), "--poll-ms", str(POLL_MS))

needs_chromium = pytest.mark.skipif(not os.access(CHROMIUM, os.X_OK),
                                    reason=f"{CHROMIUM} is not installed")


@pytest.fixture(scope="module")
def env(mstack):
    echos = [mstack.echo(f"demo-{c}", args=ARGS) for c in "ab"]
    port = free_port()
    cfg = make_config(port, {"demo": pool([e.address for e in echos])},
                      routes=[{"path_prefix": "/", "pool": "demo", "http": True}],
                      heartbeat={"interval_ms": 0})
    g = mstack.gate(cfg)
    by_addr = {e.address: e for e in echos}

    def which(user):
        out = subprocess.run([WSGATE_BIN, "--which", user, "-c", str(g.cfg_path)],
                             capture_output=True, text=True, timeout=10, check=True)
        return by_addr[out.stdout.strip()]
    # One user per backend, so that both are seen through wsgate.
    users = {}
    for i in range(200):
        users.setdefault(which(f"u{i}").name, f"u{i}")
        if len(users) == 2:
            break
    assert len(users) == 2, users
    return {"echos": echos, "gate": g, "which": which, "users": users}


@pytest.fixture(params=["direct", "gate"])
def target(request, env):
    """(port, user, name of the backend that must answer)."""
    if request.param == "direct":
        e = env["echos"][0]
        return e.port, "dora", e.name
    user = env["users"]["demo-b"]
    return env["gate"].port, user, "demo-b"


def http_conn(port, timeout=5.0):
    return http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)


def request(port, method, path, body=None, headers=None, conn=None):
    h = conn or http_conn(port)
    h.request(method, path, body=body, headers=headers or {})
    r = h.getresponse()
    data = r.read()
    if conn is None:
        h.close()
    return r.status, {k.lower(): v for k, v in r.getheaders()}, data


def post(port, user, text):
    st, h, body = request(port, "POST", f"/messages?user={user}", body=text.encode())
    assert st == 201, (st, body)
    return json.loads(body)


class Sse:
    """An EventSource's view of /events: one event at a time, bounded."""

    def __init__(self, port, path, headers=None, timeout=5.0):
        self.h = http_conn(port, timeout)
        self.h.request("GET", path, headers={"Accept": "text/event-stream", **(headers or {})})
        self.r = self.h.getresponse()
        self.headers = {k.lower(): v for k, v in self.r.getheaders()}

    def next(self):
        ev = {}
        while True:
            line = self.r.readline()
            if not line:
                raise AssertionError(f"the stream ended; got {ev}")
            line = line.decode().rstrip("\r\n")
            if not line:
                if "data" in ev or "event" in ev:
                    return ev
                continue
            if line.startswith(":"):
                continue  # a comment (wsgate's SSE heartbeat)
            k, _, v = line.partition(":")
            ev[k] = v[1:] if v.startswith(" ") else v

    def until(self, pred, timeout=5.0, what="an event"):
        deadline = time.monotonic() + timeout
        seen = []
        while time.monotonic() < deadline:
            ev = self.next()
            seen.append(ev)
            if pred(ev):
                return ev, seen
        raise AssertionError(f"no {what} within {timeout}s; saw {seen[-5:]}")

    def close(self):
        self.h.close()


# ---- the page, HEAD, errors ------------------------------------------------------------

def test_page_is_served_self_contained_with_its_backend(target):
    port, user, name = target
    st, h, body = request(port, "GET", f"/?user={user}")
    assert st == 200 and h["content-type"] == "text/html; charset=utf-8"
    assert int(h["content-length"]) == len(body)
    assert h["x-backend"] == name
    html = body.decode()
    assert f'<b id="page-backend">{name}</b>' in html
    # No external asset, nothing the CSP would block; the CSP names exactly
    # the page's own inline style and script.
    assert not re.search(r"\ssrc=|<link|https?://|\sstyle=|\son[a-z]+=", html)
    csp = dict(d.strip().split(" ", 1) for d in h["content-security-policy"].split(";"))

    def digest(tag):
        (text,) = re.findall(rf"<{tag}>(.*?)</{tag}>", html, re.S)
        return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"
    assert csp["script-src"] == digest("script") and csp["style-src"] == digest("style")
    assert csp["default-src"] == "'none'" and csp["connect-src"] == "'self'"


def test_head_keep_alive_and_404_405_on_one_connection(target):
    port, user, name = target
    h = http_conn(port)
    try:
        st, hd, body = request(port, "GET", f"/?user={user}", conn=h)
        length = hd["content-length"]
        st, hd, body = request(port, "HEAD", f"/?user={user}", conn=h)
        assert (st, hd["content-length"], body) == (200, length, b"")
        st, hd, body = request(port, "HEAD", f"/events?user={user}", conn=h)
        assert (st, hd["content-type"], body) == (200, "text/event-stream", b"")
        st, hd, body = request(port, "HEAD", f"/poll?user={user}", conn=h)
        assert (st, hd["content-type"], body) == (200, "application/json", b"")
        cases = [("GET", "/nope", 404, None), ("DELETE", "/", 405, "GET, HEAD"),
                 ("POST", "/events", 405, "GET, HEAD"), ("PUT", "/poll", 405, "GET, HEAD"),
                 ("GET", "/messages", 405, "POST"), ("GET", "/chat", 426, None),
                 ("GET", "/healthz", 200, None)]
        for method, path, want, allow in cases:
            sep = "&" if "?" in path else "?"
            st, hd, body = request(port, method, f"{path}{sep}user={user}", conn=h)
            assert st == want, (method, path, st, body)
            assert hd["x-backend"] == name, (method, path, hd)
            if allow:
                assert hd["allow"] == allow
        # Every answer above came on the one kept-alive connection.
        assert h.sock is not None
    finally:
        h.close()


def test_direct_pipelining_and_http10(env):
    """Against the backend alone (wsgate's own pipelining is test_http.py's)."""
    port = env["echos"][0].port
    c = connect(port)
    try:
        c.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n\r\nHEAD / HTTP/1.1\r\nHost: x\r\n\r\n"
               b"POST /messages?user=pipe HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\npipe"
               b"GET /nope HTTP/1.0\r\n\r\n")
        st, h, body, _ = c.read_response()
        assert (st, body) == (200, b"ok")
        st, h, _ = c.read_http_head()
        assert st == 200 and int(h["content-length"]) > 1000  # HEAD: no body follows
        st, h, body, _ = c.read_response()
        assert st == 201 and json.loads(body)["text"] == "pipe"
        st, h, body, _ = c.read_response()
        assert st == 404 and h["connection"] == "close"
        c.wait_closed(5)
    finally:
        c.close()


def test_bad_requests_are_refused_and_closed(env):
    port = env["echos"][0].port
    cases = [
        (b"POST /messages HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n", 411),
        (b"POST /messages HTTP/1.1\r\nHost: x\r\nContent-Length: 2000\r\n\r\n", 413),
        (b"POST /messages HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
         400),
        (b"POST /messages HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n", 400),
        (b"GET / HTTP/2.0\r\nHost: x\r\n\r\n", 505),
        (b"GET http://x/ HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    ]
    for raw, want in cases:
        c = connect(port)
        try:
            c.send(raw)
            st, h, _, _ = c.read_response()
            assert st == want, (raw, st)
            assert h["connection"] == "close"
            c.wait_closed(5)
        finally:
            c.close()


def test_posted_messages_are_checked(target):
    port, user, _ = target
    for path, body, want in [(f"/messages?user={user}", b"", 400),
                             (f"/messages?user={user}", b"\xff\xfe", 400),
                             (f"/messages?user={user}", b"x" * 501, 413),
                             ("/messages?user=" + "n" * 33, b"hi", 400),
                             ("/messages?user=%zz", b"hi", 400)]:
        st, _, text = request(port, "POST", path, body=body)
        assert st == want, (path, body[:10], st, text)
    m = post(port, user, "caf\u00e9 \"quoted\"")
    assert m["text"] == "caf\u00e9 \"quoted\"" and m["via"] == "http"


# ---- Server-Sent Events --------------------------------------------------------------

def test_sse_hello_ticks_and_posted_messages(target):
    port, user, name = target
    s = Sse(port, f"/events?user={user}")
    try:
        assert s.r.status == 200 and s.headers["content-type"] == "text/event-stream"
        assert s.headers["x-backend"] == name
        hello = s.next()
        assert hello["event"] == "hello" and "id" not in hello
        assert json.loads(hello["data"])["backend"] == name
        assert hello["retry"] == "1000"
        # The kept messages are replayed (no Last-Event-ID), then ticks come.
        t1, _ = s.until(lambda e: e.get("event") == "tick", what="a tick")
        t2, _ = s.until(lambda e: e.get("event") == "tick", what="a second tick")
        assert int(t2["id"]) > int(t1["id"])
        assert json.loads(t2["data"])["backend"] == name
        m = post(port, user, "over sse")
        ev, _ = s.until(lambda e: e.get("event") == "message" and e["id"] == str(m["id"]),
                        what="the posted message")
        assert json.loads(ev["data"]) == m
    finally:
        s.close()


def test_sse_replays_only_after_last_event_id(target):
    port, user, _ = target
    first, second = post(port, user, "before"), post(port, user, "after")
    s = Sse(port, f"/events?user={user}", headers={"Last-Event-ID": str(first["id"])})
    try:
        assert s.next()["event"] == "hello"
        ev = s.next()  # replays come before any tick
        assert (ev["event"], ev["id"]) == ("message", str(second["id"]))
        assert json.loads(ev["data"])["text"] == "after"
    finally:
        s.close()
    st, _, body = request(port, "GET", f"/events?user={user}", headers={"Last-Event-ID": "x"})
    assert st == 400


def test_sse_over_http10_ends_at_the_close(env):
    c = connect(env["echos"][0].port)
    try:
        c.send(b"GET /events HTTP/1.0\r\n\r\n")
        st, h, _ = c.read_http_head()
        assert st == 200 and h["connection"] == "close" and "transfer-encoding" not in h
        c.read_until(b"event: tick\n")  # raw events, no chunk framing
    finally:
        c.close()


# ---- long polling ----------------------------------------------------------------------

def _poll(port, user, since):
    """(status, headers, JSON, seconds it took)."""
    h = http_conn(port, POLL_MS / 1000 + 5)
    try:
        t0 = time.monotonic()
        h.request("GET", f"/poll?user={user}&since={since}")
        r = h.getresponse()
        body = r.read()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, json.loads(body), \
            time.monotonic() - t0
    finally:
        h.close()


def test_long_poll_returns_when_a_message_is_posted(target):
    port, user, name = target
    since = post(port, user, "mark")["id"]
    c = connect(port, timeout=POLL_MS / 1000 + 5)
    try:
        c.send(f"GET /poll?user={user}&since={since} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        # Held: nothing comes back while nothing is posted (a bounded look).
        c.sock.settimeout(0.3)
        with pytest.raises(socket.timeout):
            c.sock.recv(1, socket.MSG_PEEK)
        c.sock.settimeout(POLL_MS / 1000 + 5)
        t0 = time.monotonic()
        m = post(port, user, "wake up")
        st, h, body, _ = c.read_response()
        took = time.monotonic() - t0
        assert st == 200 and h["x-backend"] == name
        j = json.loads(body)
        assert [x["text"] for x in j["messages"]] == ["wake up"] and j["messages"][0] == m
        assert j["last"] >= m["id"] and j["backend"] == name
        assert took < POLL_MS / 1000 * 0.8, took  # the post woke it, not the timeout
        # The connection is kept: the next poll with the new "last" is held again.
        c.send(f"GET /healthz?user={user} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        assert c.read_response()[0] == 200
    finally:
        c.close()


def test_long_poll_times_out_with_an_empty_answer(target):
    port, user, name = target
    since = post(port, user, "quiet")["id"]
    st, h, j, took = _poll(port, user, since)
    assert st == 200 and j["messages"] == [] and j["backend"] == name and j["last"] >= since
    assert POLL_MS / 1000 - 0.1 <= took < POLL_MS / 1000 + 2, took


def test_long_poll_answers_at_once_with_a_backlog_or_an_unknown_id(target):
    port, user, _ = target
    m = post(port, user, "backlog")
    st, _, j, took = _poll(port, user, m["id"] - 1)
    assert st == 200 and j["messages"][-1] == m and took < POLL_MS / 1000 / 2
    st, _, j, took = _poll(port, user, m["id"] + 10 ** 9)  # from another backend: start over
    assert st == 200 and j["messages"] == [] and took < POLL_MS / 1000 / 2
    assert request(port, "GET", f"/poll?user={user}&since=abc")[0] == 400


# ---- the WebSocket chat ---------------------------------------------------------------

def test_websocket_chat_echoes_and_posts(target):
    port, user, name = target
    since = post(port, user, "ws mark")["id"]

    async def body():
        async with wsc(port, f"/chat?user={user}") as ws:
            await ws.send("whoami")
            who = await ws.recv()
            await ws.send("hello over ws")
            echo = await ws.recv()
            await ws.send("x" * 200)  # too long to be a chat line: only echoed
            long_echo = await ws.recv()
        async with wsc(port, f"/?user={user}") as ws:  # not /chat: only echoed
            await ws.send("not posted")
            other = await ws.recv()
        return who, echo, long_echo, other
    who, echo, long_echo, other = run(body())
    assert (who, echo, long_echo, other) == (name, "hello over ws", "x" * 200, "not posted")
    st, _, j, _ = _poll(port, user, since)
    assert [(m["text"], m["user"], m["via"]) for m in j["messages"]] == [
        ("hello over ws", user, "websocket")]


# ---- make run: the configuration and the script --------------------------------------

def test_demo_config_passes_wsgate_t_and_routes_http_and_websocket_together():
    cfg_path = ROOT / "config" / "demo.json"
    r = subprocess.run([WSGATE_BIN, "-t", "-c", str(cfg_path)], capture_output=True,
                       text=True, timeout=10)
    assert r.returncode == 0 and "configuration OK" in r.stdout + r.stderr, r
    cfg = json.loads(cfg_path.read_text())
    (route,) = [x for x in cfg["routes"] if x["path_prefix"] == "/"]
    assert route.get("http", True) is True and route.get("websocket", True) is True
    # demo.sh starts the backends the configuration names.
    script = (ROOT / "bench" / "demo.sh").read_text()
    addrs = [b["address"] for b in cfg["pools"][route["pool"]]["backends"]]
    defaults = dict(re.findall(r"^(\w+)=\$\{\w+:-(\d+)\}", script, re.M))
    assert addrs == [f"127.0.0.1:{defaults[f'BACKEND_PORT_{i + 1}']}"
                     for i in range(len(addrs))], (addrs, defaults)
    assert cfg["listeners"][0]["bind"] == f"127.0.0.1:{defaults['LISTEN_PORT']}"


def test_make_run_script_ends_with_the_browser_line_and_serves_the_page(tmp_path):
    """bench/demo.sh (what `make run` runs after the build) on free ports."""
    build = Path(WSGATE_BIN).parent
    ports = [free_port() for _ in range(4)]
    env = {"LISTEN_PORT": str(ports[0]), "BACKEND_PORT_1": str(ports[1]),
           "BACKEND_PORT_2": str(ports[2]), "BACKEND_PORT_3": str(ports[3])}
    p = Proc([ROOT / "bench" / "demo.sh", build], tmp_path / "demo.log", env=env)
    try:
        line = f"open http://127.0.0.1:{ports[0]}/ in a browser"
        wait_for(lambda: line in p.log() or not p.alive, 20, 0.05, what="the browser line")
        assert p.alive, p.log()
        assert p.log().rstrip("\n").endswith(line), p.log()
        names = set()
        for i in range(200):  # until every backend has answered a user
            st, h, body = request(ports[0], "GET", f"/?user=u{i}")
            assert st == 200 and b"page-backend" in body
            names.add(h["x-backend"])
            if len(names) == 3:
                break
        assert names == {"backend-1", "backend-2", "backend-3"}
        p.signal(signal.SIGINT)
        assert p.wait(15) == 130, p.log()
        assert "demo: stopped" in p.log()
        for port in ports:
            assert not can_connect(port)
    finally:
        p.stop()


# ---- the page in Chromium, through wsgate ---------------------------------------------

WAIT_JS = """
const until = async (cond, ms, what) => {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error("timed out after " + ms + " ms: " + what +
                                          " " + JSON.stringify(window.demo));
    await new Promise(r => setTimeout(r, 20));
  }
};
"""


@needs_chromium
def test_demo_page_in_chromium_through_wsgate(env, tmp_path):
    g = env["gate"]
    user = env["users"]["demo-a"]
    b = Browser(tmp_path / "chromium.log")
    try:
        url = f"http://127.0.0.1:{g.port}/?user={user}"
        b.navigate(url)
        ready = b.evaluate(WAIT_JS + """
          await until(() => window.demo && demo.ws.state === "open" && demo.ws.backend &&
                      demo.sse.state === "open" && demo.sse.ticks >= 2 && demo.poll.polls >= 1,
                      10000, "the three transports");
          return {page: demo.pageBackend, ws: demo.ws.backend, sse: demo.sse.backend,
                  poll: demo.poll.backend, sticky: document.getElementById("sticky").textContent,
                  ticks: demo.sse.ticks, lastId: demo.sse.lastId};
        """)
        assert ready["page"] == ready["ws"] == ready["sse"] == ready["poll"] == "demo-a", ready
        assert "sticky by user" in ready["sticky"], ready
        assert int(ready["lastId"]) > 0
        short, long_ = "hello from chromium", "long " * 40  # 200 bytes: POST /messages
        got = b.evaluate(WAIT_JS + f"""
          const send = text => {{
            document.getElementById("text").value = text;
            document.getElementById("send").requestSubmit();
          }};
          send({json.dumps(short)});
          await until(() => demo.ws.echoes.includes({json.dumps(short)}), 5000, "the echo");
          send({json.dumps(long_)});
          const has = (list, t) => list.some(m => m.text === t);
          await until(() => [{json.dumps(short)}, {json.dumps(long_.strip())}].every(t =>
                        has(demo.sse.messages, t) && has(demo.poll.messages, t)),
                      8000, "both messages by SSE and by the long poll");
          const feed = [...document.querySelectorAll("#feed li")].map(li => li.textContent);
          return {{feed, sse: demo.sse.messages.slice(-2), error:
                   document.getElementById("error").textContent}};
        """)
        assert got["error"] == ""
        assert [(m["text"], m["via"], m["backend"]) for m in got["sse"]] == [
            (short, "websocket", "demo-a"), (long_.strip(), "http", "demo-a")]
        assert any(short in li and "via websocket on demo-a" in li for li in got["feed"])
        # The shot is for a person to look at, next to the build's binary.
        b.screenshot(Path(WSGATE_BIN).parent / "demo.png", width=1000, height=800)
    finally:
        b.close()


@needs_chromium
def test_demo_page_without_a_user_picks_one_and_stays_on_its_backend(env, tmp_path):
    g = env["gate"]
    b = Browser(tmp_path / "chromium.log")
    try:
        b.command("Page.navigate", {"url": f"http://127.0.0.1:{g.port}/"})

        def settled():
            # The page reloads itself: an evaluation may meet the old document.
            try:
                return b.evaluate("""
                  if (!location.search.startsWith("?user=guest-") || !window.demo ||
                      !demo.ws.backend || !demo.sse.backend || !demo.poll.backend) return null;
                  return {user: demo.user, names: [demo.pageBackend, demo.ws.backend,
                                                   demo.sse.backend, demo.poll.backend]};
                """, timeout=5)
            except BrowserError:
                return None
        state = wait_for(settled, 15, 0.05, what="the reload with a user")
        expected = env["which"](state["user"]).name
        assert state["names"] == [expected] * 4, state
    finally:
        b.close()
