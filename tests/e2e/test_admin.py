"""SPEC §7 (and §6 drain, §8 access lines): the admin endpoint.

/healthz, /status (JSON shape), the bearer token, 404/405 JSON errors,
drain (1012 to exactly the drained backend's clients, new connections avoid
it) and enable, /metrics as strict Prometheus text whose counters match what
the test did, and access lines carrying the close code.
"""

import http.client
import json
import re
import signal
import socket
import threading
import time

import pytest

from conftest import free_port, make_config, pool, wait_for
from opshelpers import (Client, admin, admin_json, backend, landing, scrape, status,
                        wait_state)
from wsg_raw import OP_CLOSE, OP_TEXT, close_payload, connect, upgrade_request, ws_connect

TOKEN = "s3cr3t-t0ken.A_b~c"
USERS = [f"user-{i}" for i in range(16)]


@pytest.fixture(scope="module")
def env(mstack):
    """One wsgate (2 workers, a token) in front of three echo backends."""
    echos = [mstack.echo(f"adm{i}") for i in range(3)]
    port, aport = free_port(), free_port()
    cfg = make_config(
        port, {"p": pool([e.address for e in echos],
                         health={"type": "websocket", "path": "/hc", "interval_ms": 300,
                                 "timeout_ms": 500, "rise": 1, "fall": 2})},
        workers=2, admin={"bind": f"127.0.0.1:{aport}", "token": TOKEN},
        heartbeat={"interval_ms": 0})
    g = mstack.gate(cfg)
    g.aport = aport
    g.echos = echos
    return g


# ---- /healthz, /status ---------------------------------------------------------

def test_healthz_answers_ok_without_a_token(env):
    st, hdrs, body = admin(env.aport, "GET", "/healthz")
    assert (st, body) == (200, b"ok\n")
    assert hdrs["content-type"].startswith("text/plain")
    st, _, body = admin(env.aport, "HEAD", "/healthz")
    assert (st, body) == (200, b"")


def test_status_has_the_spec_shape(env):
    # Every backend is checked at once: last_check fills in quickly.
    wait_for(lambda: all(b["last_check"] for b in status(env.aport, TOKEN)["pools"]["p"]
                         ["backends"]), 5, what="a first check of every backend")
    j = status(env.aport, TOKEN)
    assert isinstance(j["version"], str) and re.fullmatch(r"\d+\.\d+\.\d+.*", j["version"])
    assert isinstance(j["uptime_s"], (int, float)) and j["uptime_s"] >= 0
    assert j["workers"] == 2
    assert set(j["connections"]) >= {"active", "total", "rejected"}
    assert all(isinstance(v, int) for v in j["connections"].values())
    bs = j["pools"]["p"]["backends"]
    assert [b["address"] for b in bs] == [e.address for e in env.echos]
    for b in bs:
        assert set(b) >= {"address", "weight", "state", "active", "total", "failures",
                          "last_check"}
        assert b["weight"] == 1 and b["state"] == "up"
        assert set(b["last_check"]) == {"ok", "ms", "error"}
        assert b["last_check"]["ok"] is True and b["last_check"]["error"] is None
        assert isinstance(b["last_check"]["ms"], int)


def test_status_counts_a_live_connection(env):
    c = Client(env.port, "counted")
    try:
        j = status(env.aport, TOKEN)
        assert j["connections"]["active"] >= 1
        b = [b for b in j["pools"]["p"]["backends"]
             if b["address"] == [e.address for e in env.echos if e.name == c.name][0]][0]
        assert b["active"] >= 1 and b["total"] >= 1
    finally:
        c.close()


# ---- token, 404, 405 --------------------------------------------------------------

@pytest.mark.parametrize("method,path", [
    ("GET", "/status"), ("GET", "/metrics"), ("POST", "/reload"),
    ("POST", "/pools/p/backends/127.0.0.1:1/drain"), ("GET", "/no/such/path"),
])
def test_token_is_required_everywhere_but_healthz(env, method, path):
    for hdrs in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"},
                 {"Authorization": f"Bearer {TOKEN}x"}, {"Authorization": "Bearer "}):
        st, h, body = admin(env.aport, method, path, headers=hdrs)
        assert st == 401, (hdrs, st, body)
        assert h["www-authenticate"].startswith("Bearer"), h
        assert "error" in json.loads(body)


def test_token_scheme_is_case_insensitive(env):
    st, _, _ = admin(env.aport, "GET", "/status", headers={"Authorization": f"bearer {TOKEN}"})
    assert st == 200


def test_unknown_path_is_404_json(env):
    for path in ("/nope", "/status/", "/pools/p", "/pools/p/backends/x/explode", "//"):
        st, _, j = admin_json(env.aport, "GET", path, TOKEN)
        assert st == 404 and j == {"error": "not found"}, (path, st, j)


@pytest.mark.parametrize("method,path,allow", [
    ("POST", "/status", "GET"), ("DELETE", "/metrics", "GET"), ("PUT", "/healthz", "GET"),
    ("GET", "/reload", "POST"), ("GET", "/pools/p/backends/127.0.0.1:1/drain", "POST"),
])
def test_wrong_method_is_405_with_allow(env, method, path, allow):
    st, h, j = admin_json(env.aport, method, path, TOKEN)
    assert st == 405, (st, j)
    assert allow in h["allow"]
    assert "error" in j


def test_keep_alive_serves_several_requests_on_one_connection(env):
    c = connect(env.aport)
    try:
        req = (f"GET /status HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n\r\n"
               "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").encode()
        c.send(req)  # pipelined
        st1, h1, b1, _ = c.read_response()
        st2, h2, b2, _ = c.read_response()
        assert st1 == 200 and json.loads(b1)["workers"] == 2
        assert (st2, b2) == (200, b"ok\n")
        c.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        st3, h3, b3, _ = c.read_response()
        assert st3 == 200 and h3["connection"] == "close"
        c.wait_closed(5)
    finally:
        c.close()


def test_oversized_and_malformed_requests_are_refused(env):
    c = connect(env.aport)
    try:
        c.send(b"GET /" + b"a" * 10000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        st, _, body, _ = c.read_response()
        assert st == 431 and "error" in json.loads(body)
    finally:
        c.close()
    c = connect(env.aport)
    try:
        c.send(b"NOT HTTP AT ALL\r\n\r\n")
        st, _, body, _ = c.read_response()
        assert st == 400 and "error" in json.loads(body)
    finally:
        c.close()


MAX_ADMIN_CONNS = 64  # WSG_ADMIN_MAX_CONNS in include/wsgate/admin.h


def _closed_by_server(s, timeout):
    """Whether the server ends <s> within <timeout> (EOF or reset)."""
    s.settimeout(timeout)
    try:
        return s.recv(4096) == b""
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False


def _still_open(s):
    """No EOF, no reset, nothing to read: the server keeps <s> open."""
    s.setblocking(False)
    try:
        s.recv(1)
        return False
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        s.setblocking(True)


def _admin_gate(stack):
    echo = stack.echo("admcap")
    port, aport = free_port(), free_port()
    g = stack.gate(make_config(port, {"p": pool([echo.address])},
                               admin={"bind": f"127.0.0.1:{aport}"},
                               heartbeat={"interval_ms": 0}))
    g.aport = aport
    return g


def _shed_total(aport):
    return scrape(aport).value("wsgate_admin_connections_shed_total")


def test_healthz_answers_at_once_when_idle_connections_fill_the_admin_endpoint(stack):
    """At the connection cap, the connection idle the longest is closed to
    admit the new one: /healthz answers 200 at once, not after an idle or
    request deadline (a liveness probe would restart a healthy wsgate)."""
    g = _admin_gate(stack)
    shed0 = _shed_total(g.aport)
    extra = 6
    socks = []
    try:
        for _ in range(MAX_ADMIN_CONNS + extra):
            socks.append(socket.create_connection(("127.0.0.1", g.aport), timeout=5))
        # One attempt, bounded: no retry loop that could wait the idle
        # connections out.
        t0 = time.monotonic()
        st, _, body = admin(g.aport, "GET", "/healthz", timeout=3)
        assert (st, body) == (200, b"ok\n")
        assert time.monotonic() - t0 < 3
        # The oldest idle ones made room (one per connection over the cap,
        # one for the probe); the newest are untouched.
        for i, s in enumerate(socks[: extra + 1]):
            assert _closed_by_server(s, 5), f"connection {i} (among the oldest) still open"
        assert all(_still_open(s) for s in socks[-MAX_ADMIN_CONNS // 2:])
        # The proxy is not affected by a saturated admin endpoint.
        Client(g.port, "still-fine").close()
        assert _shed_total(g.aport) - shed0 >= extra + 1
        assert "to admit a new one" in g.log()
    finally:
        for s in socks:
            s.close()


def _slow_request(aport):
    """A connection with a request under way: a whole GET /healthz and the
    start of a second request in one write. Once the first answer is back,
    the server has read (and holds) the incomplete second one, so no timing
    is left to chance."""
    s = socket.create_connection(("127.0.0.1", aport), timeout=5)
    s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /status HTTP/1.1\r\nHost: x\r\n")
    got = b""
    while not got.endswith(b"\r\n\r\nok\n"):
        chunk = s.recv(4096)
        assert chunk, f"closed before the first answer: {got!r}"
        got += chunk
    return s


def test_idle_admin_connections_are_shed_before_incomplete_requests(stack):
    """With half the slots held by requests still arriving and half by idle
    connections, an idle one goes first; with only incomplete requests left,
    the one that began first goes, so /healthz still answers."""
    g = _admin_gate(stack)
    half = MAX_ADMIN_CONNS // 2
    slow, idle = [], []
    try:
        slow = [_slow_request(g.aport) for _ in range(half)]
        idle = [socket.create_connection(("127.0.0.1", g.aport), timeout=5)
                for _ in range(MAX_ADMIN_CONNS - half)]
        st, _, _ = admin(g.aport, "GET", "/healthz", timeout=3)
        assert st == 200
        assert _closed_by_server(idle[0], 5), "the oldest idle connection was not shed"
        assert all(_still_open(s) for s in slow), "an incomplete request was shed first"

        for s in idle:
            s.close()
        idle = []
        # Each of these is answered once before it counts, so the closes
        # above have been seen by then.
        slow += [_slow_request(g.aport) for _ in range(MAX_ADMIN_CONNS - half)]
        st, _, _ = admin(g.aport, "GET", "/healthz", timeout=3)
        assert st == 200
        assert _closed_by_server(slow[0], 5), "the oldest incomplete request was not shed"
        assert all(_still_open(s) for s in slow[1:])
    finally:
        for s in slow + idle:
            s.close()


# ---- drain and enable --------------------------------------------------------------

def _victim(clients):
    by = {}
    for c in clients:
        by.setdefault(c.name, []).append(c)
    assert len(by) >= 2, f"all clients on one backend: {list(by)}"
    return max(by, key=lambda n: len(by[n])), by


def test_drain_closes_exactly_that_backends_clients_with_1012_and_enable_restores(env):
    home = landing(env.port, USERS)
    clients = [Client(env.port, u) for u in USERS]
    try:
        name, by = _victim(clients)
        addr = [e.address for e in env.echos if e.name == name][0]
        st, _, j = admin_json(env.aport, "POST", f"/pools/p/backends/{addr}/drain", TOKEN)
        assert st == 200, j
        assert j == {"pool": "p", "backend": addr, "state": "draining", "spread_ms": 0}
        assert backend(env.aport, "p", addr, TOKEN)["state"] == "draining"

        for c in by[name]:
            assert c.read_close() == 1012
        for other, cs in by.items():
            if other == name:
                continue
            for c in cs:  # untouched: still relaying
                assert c.ask() == other

        # New connections avoid the drained backend; other keys stay home.
        now = landing(env.port, USERS)
        assert name not in now.values(), now
        for u in USERS:
            if home[u] != name:
                assert now[u] == home[u], (u, home[u], now[u])

        # Draining backends are still checked but stay draining.
        time.sleep(0.7)
        b = backend(env.aport, "p", addr, TOKEN)
        assert b["state"] == "draining" and b["last_check"]["ok"] is True

        st, _, j = admin_json(env.aport, "POST", f"/pools/p/backends/{addr}/enable", TOKEN)
        assert st == 200, j
        assert j["state"] == "up" and j["backend"] == addr and j["pool"] == "p"
        assert landing(env.port, USERS) == home
    finally:
        for c in clients:
            c.close()


def test_drain_with_spread_ms_spreads_the_1012s(env):
    clients = [Client(env.port, f"spread-{i}") for i in range(60)]
    addr = None
    try:
        name, by = _victim(clients)
        victims = by[name]
        addr = [e.address for e in env.echos if e.name == name][0]
        spread = 1500
        # Read every victim at the same time, from before the request: each
        # close is stamped when it arrives, not when a sequential reader gets
        # to it.
        stamps, codes = [], []

        def read(c):
            c.conn.settimeout(spread / 1000 + 5)
            codes.append(c.read_close())
            stamps.append(time.monotonic())
        threads = [threading.Thread(target=read, args=(c,)) for c in victims]
        for t in threads:
            t.start()
        t0 = time.monotonic()
        st, _, j = admin_json(env.aport, "POST",
                              f"/pools/p/backends/{addr}/drain?spread_ms={spread}", TOKEN)
        assert st == 200 and j["spread_ms"] == spread, j
        for t in threads:
            t.join(spread / 1000 + 10)
        times = sorted(x - t0 for x in stamps)
        assert codes == [1012] * len(victims), codes
        # Every one closed within spread (+ slack), and not all at once (with
        # >= 8 clients spread uniformly, all within a quarter is very unlikely).
        assert max(times) < spread / 1000 + 3, times
        if len(victims) >= 8:
            assert max(times) - min(times) > spread / 1000 / 4, times
    finally:
        if addr:
            admin(env.aport, "POST", f"/pools/p/backends/{addr}/enable", TOKEN)
        for c in clients:
            c.close()


def test_drain_of_unknown_backend_or_pool_is_404_json(env):
    for path in ("/pools/p/backends/127.0.0.1:1/drain", "/pools/nope/backends/x:1/drain",
                 "/pools/p/backends/%5B::1%5D:9/enable"):
        st, _, j = admin_json(env.aport, "POST", path, TOKEN)
        assert st == 404 and "error" in j, (path, st, j)


def test_drain_accepts_a_percent_encoded_address_and_rejects_bad_spread(env):
    addr = env.echos[0].address
    enc = addr.replace(":", "%3A").replace(".", "%2E")
    st, _, j = admin_json(env.aport, "POST", f"/pools/p/backends/{addr}/drain?spread_ms=x",
                          TOKEN)
    assert st == 400 and "spread_ms" in j["error"]
    assert backend(env.aport, "p", addr, TOKEN)["state"] == "up"
    st, _, j = admin_json(env.aport, "POST", f"/pools/p/backends/{enc}/enable", TOKEN)
    assert st == 200 and j["backend"] == addr


# ---- /metrics and access lines -----------------------------------------------------

def _exchange(port, user, texts, close_code):
    """A raw client: sends <texts>, reads the echoes, closes with <close_code>.
    Returns (frames_out, bytes_out, frames_in, bytes_in) as seen on the wire
    after the handshake."""
    c, _ = ws_connect(port, f"/?user={user}")
    fo = bo = fi = bi = 0

    def wire_len(n, masked):
        return 2 + (0 if n < 126 else 2 if n < 65536 else 8) + (4 if masked else 0) + n
    try:
        for t in texts:
            c.send_frame(OP_TEXT, t)
            fo += 1
            bo += wire_len(len(t.encode()), True)
            f = c.read_frame()
            assert f.opcode == OP_TEXT and f.payload == t.encode() and not f.masked
            fi += 1
            bi += wire_len(len(f.payload), False)
        c.send_frame(OP_CLOSE, close_payload(close_code))
        fo += 1
        bo += wire_len(2, True)
        f = c.read_frame()
        assert f.opcode == OP_CLOSE
        fi += 1
        bi += wire_len(len(f.payload), False)
        c.wait_closed(5)
    finally:
        c.close()
    return fo, bo, fi, bi


def test_metrics_parse_and_count_what_the_test_did(stack):
    echo = stack.echo("metrics")
    port, aport = free_port(), free_port()
    cfg = make_config(port, {"p": pool([echo.address])}, workers=2,
                      admin={"bind": f"127.0.0.1:{aport}"}, heartbeat={"interval_ms": 0})
    g = stack.gate(cfg)

    # The fixture's readiness probe (one TCP connect to the listener) is a
    # connection too: count from a baseline taken once it is counted and gone.
    m0 = wait_for(lambda: (lambda m: m if m.value("wsgate_connections_total") >= 1 and
                           m.value("wsgate_connections_active") == 0 else None)(scrape(aport)),
                  5, what="the readiness probe to be counted and closed")
    assert m0.types["wsgate_handshake_duration_seconds"] == "histogram"
    assert m0.value("wsgate_backend_up", pool="p", backend=echo.address) == 1
    for name in ("wsgate_connections_active", "wsgate_connections_total",
                 "wsgate_connections_rejected_total", "wsgate_handshakes_total",
                 "wsgate_frames_total", "wsgate_bytes_total", "wsgate_closes_total",
                 "wsgate_heartbeat_timeouts_total", "wsgate_idle_timeouts_total",
                 "wsgate_protocol_errors_total", "wsgate_backend_state",
                 "wsgate_backend_active_connections"):
        assert name in m0.types, name
    assert all(n.startswith("wsgate_") for n in m0.types)

    texts = ["a", "hello" * 30, "x" * 200, "\u00e9t\u00e9"]
    totals = [0, 0, 0, 0]
    for i, code in enumerate([1000, 1000, 1000, 4000]):
        for k, v in enumerate(_exchange(port, f"m{i}", texts[: i + 1], code)):
            totals[k] += v
    # One handshake refused: an unsupported WebSocket version gets 426.
    c = connect(port)
    c.send(upgrade_request("/", "x", headers={"Sec-WebSocket-Version": "12"})[0])
    assert c.read_response()[0] == 426
    c.close()

    def settled():
        m = scrape(aport)
        return m if m.value("wsgate_connections_active") == 0 and \
            m.value("wsgate_closes_total", code="1000") == 3 else None
    m = wait_for(settled, 5, interval=0.05, what="the four connections to be counted closed")

    def delta(name, **labels):
        return m.value(name, **labels) - (m0.value(name, **labels) or 0)
    fo, bo, fi, bi = totals
    assert delta("wsgate_frames_total", direction="client_to_backend") == fo
    assert delta("wsgate_bytes_total", direction="client_to_backend") == bo
    assert delta("wsgate_frames_total", direction="backend_to_client") == fi
    assert delta("wsgate_bytes_total", direction="backend_to_client") == bi
    assert m.value("wsgate_closes_total", code="other") == 1
    assert m.value("wsgate_closes_total", code="1012") == 0
    assert delta("wsgate_connections_total") == 5
    assert m.value("wsgate_handshakes_total", status="101") == 4
    assert delta("wsgate_handshakes_total", status="426") == 1
    assert delta("wsgate_handshake_duration_seconds_count") == 5
    assert delta("wsgate_handshake_duration_seconds_sum") > 0
    assert m.value("wsgate_backend_connections_total", pool="p", backend=echo.address) == 4
    assert m.value("wsgate_backend_active_connections", pool="p", backend=echo.address) == 0
    assert m.value("wsgate_backend_state", pool="p", backend=echo.address, state="up") == 1
    assert m.value("wsgate_backend_state", pool="p", backend=echo.address,
                   state="draining") == 0

    # Access lines carry the close code (and who closed).
    log = g.log()
    access = [ln for ln in log.splitlines() if " access " in ln]
    assert sum(" close=1000" in ln for ln in access) == 3, access
    assert sum(" close=4000" in ln for ln in access) == 1, access
    assert all("closed_by=client" in ln for ln in access if " close=4000" in ln), access
    assert any(" status=426" in ln for ln in access), access


def test_metrics_count_1012_closes_of_a_drain(stack):
    echo = stack.echo("drained")
    port, aport = free_port(), free_port()
    cfg = make_config(port, {"p": pool([echo.address])},
                      admin={"bind": f"127.0.0.1:{aport}"}, heartbeat={"interval_ms": 0})
    g = stack.gate(cfg)
    clients = [Client(port, f"d{i}") for i in range(3)]
    try:
        st, _, _ = admin_json(aport, "POST", f"/pools/p/backends/{echo.address}/drain")
        assert st == 200
        for c in clients:
            assert c.read_close() == 1012
    finally:
        for c in clients:
            c.close()
    m = wait_for(lambda: (lambda m: m if m.value("wsgate_closes_total", code="1012") == 3
                          else None)(scrape(aport)), 5, what="three 1012 closes counted")
    assert m.value("wsgate_backend_state", pool="p", backend=echo.address,
                   state="draining") == 1
    assert m.value("wsgate_backend_up", pool="p", backend=echo.address) == 0
    assert sum(" close=1012" in ln for ln in g.log().splitlines() if " access " in ln) == 3


def test_healthz_answers_503_draining_once_shutdown_begins(stack):
    echo = stack.echo("shut")
    port, aport = free_port(), free_port()
    cfg = make_config(port, {"p": pool([echo.address])},
                      admin={"bind": f"127.0.0.1:{aport}"}, heartbeat={"interval_ms": 0},
                      timeouts={"drain_ms": 3000})
    g = stack.gate(cfg)
    # A client that never answers the 1001 keeps wsgate draining for a while.
    c, _ = ws_connect(port, "/?user=slow")
    try:
        g.signal(signal.SIGTERM)
        st, _, body = wait_for(lambda: (lambda r: r if r[0] == 503 else None)(
            admin(aport, "GET", "/healthz")), 2, what="/healthz 503")
        assert body == b"draining\n"
    finally:
        c.close()
