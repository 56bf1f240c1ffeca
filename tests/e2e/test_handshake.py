"""SPEC §3: request parsing and its error answers, routing, Upgrade checks,
forwarded headers, backend retries and the relay of the backend's answer.

One wsgate serves the whole module; each test uses its own route/pool or a
unique request id so that the tests do not depend on each other's order.
"""

import json
import socket
import subprocess
import uuid

import pytest

from conftest import WSGATE_BIN, dead_port, free_port, make_config, pool, run, wsc
from wsg_raw import (OP_TEXT, accept_for, connect, encode_frame, new_key,
                     upgrade_request, ws_connect)

HANDSHAKE_MS = 500
MAX_HEADER = 2048


class Blackhole:
    """A listener whose accept queue is full: connects to it hang (the SYNs
    are dropped), which is how a connect timeout looks on loopback."""

    def __init__(self):
        self.lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(0)
        self.port = self.lsock.getsockname()[1]
        self.address = f"127.0.0.1:{self.port}"
        self.fill = []
        for _ in range(3):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setblocking(False)
            try:
                s.connect(("127.0.0.1", self.port))
            except BlockingIOError:
                pass
            self.fill.append(s)

    def stop(self):
        for s in self.fill:
            s.close()
        self.lsock.close()


@pytest.fixture(scope="module")
def env(mstack):
    s = mstack
    e = {
        "fake": s.fake("main"),
        "chat": s.echo("pool-chat"),
        "org": s.echo("pool-org"),
        "api": s.echo("pool-api"),
        "retry": s.echo("pool-retry"),
        "echo": s.echo("pool-echo"),
        "dead": [f"127.0.0.1:{dead_port()}" for _ in range(4)],
    }

    async def subproto_handler(ws, path):
        async for msg in ws:
            await ws.send(msg)
    e["wslib"] = s.wslib(subproto_handler, subprotocols=["chat.v2"])
    e["blackhole"] = Blackhole()
    s.fakes.append(e["blackhole"])

    port = free_port()
    dead = e["dead"]
    pools = {
        "main": pool([e["fake"].address]),
        "chat": pool([e["chat"].address]),
        "org": pool([e["org"].address]),
        "api": pool([e["api"].address]),
        "retry": pool([dead[0], e["retry"].address], retries=2),
        "allrefused": pool([dead[1], dead[2]], retries=2),
        "to503": pool([dead[3]], retries=0),
        "subproto": pool([e["wslib"].address]),
        "echo": pool([e["echo"].address]),
        "slow": pool([e["blackhole"].address, e["retry"].address], retries=1,
                     connect_timeout_ms=300),
    }
    local = "127.0.0.1"
    routes = [
        {"host": "chat.example.com", "path_prefix": "/ws", "pool": "chat"},
        {"host": "*.example.org", "pool": "org"},
        {"path_prefix": "/api", "pool": "api"},
        {"host": local, "path_prefix": "/retry", "pool": "retry"},
        {"host": local, "path_prefix": "/allrefused", "pool": "allrefused"},
        {"host": local, "path_prefix": "/to503", "pool": "to503"},
        {"host": local, "path_prefix": "/subproto", "pool": "subproto"},
        {"host": local, "path_prefix": "/echo", "pool": "echo"},
        {"host": local, "path_prefix": "/slow", "pool": "slow"},
        {"host": local, "path_prefix": "/wsonly", "pool": "echo", "http": False},
        {"host": local, "path_prefix": "/httponly", "pool": "echo", "websocket": False},
        {"host": local, "pool": "main"},
    ]
    cfg = make_config(port, pools, routes,
                      timeouts={"handshake_ms": HANDSHAKE_MS},
                      limits={"max_header_bytes": MAX_HEADER})
    e["gate"] = s.gate(cfg)
    e["port"] = port
    return e


def tag():
    return uuid.uuid4().hex[:12]


def expect_error(port, data, status, closes=True):
    """Sends <data>, expects a small HTTP/1.1 <status> answer with
    Connection: close, then the connection closed by wsgate."""
    c = connect(port)
    try:
        c.send(data)
        st, headers, body, raw = c.read_response()
        assert st == status, raw + body
        assert raw.startswith(b"HTTP/1.1 "), raw
        assert "close" in headers.get("connection", "").lower(), raw
        if closes:
            c.wait_closed(5)
        return headers, body
    finally:
        c.close()


def whoami_raw(port, path, host):
    c, _ = ws_connect(port, path, host=host)
    try:
        c.send_frame(OP_TEXT, "whoami")
        op, payload = c.read_message()
        assert op == OP_TEXT
        return payload.decode()
    finally:
        c.close()


# ---- §3.1 parsing errors ---------------------------------------------------

def test_header_larger_than_max_header_bytes_gets_431(env):
    req, _ = upgrade_request("/", f"127.0.0.1:{env['port']}",
                             headers=[("X-Big", "a" * (MAX_HEADER * 2))])
    expect_error(env["port"], req, 431)


def test_header_just_under_the_limit_is_accepted(env):
    req, key = upgrade_request("/", f"127.0.0.1:{env['port']}",
                               headers=[("X-Pad", "a" * (MAX_HEADER - 400))])
    assert len(req) < MAX_HEADER
    c = connect(env["port"])
    try:
        c.send(req)
        st, h, raw = c.read_http_head()
        assert st == 101, raw
    finally:
        c.close()


@pytest.mark.parametrize("data", [
    b"GARBAGE\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nthis is not a header\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nBad Name: x\r\n\r\n",
    b"GET / HTTX/1.1\r\nHost: 127.0.0.1\r\n\r\n",
], ids=["garbage", "no-colon", "space-in-name", "bad-version-token"])
def test_malformed_request_gets_400(env, data):
    expect_error(env["port"], data, 400)


def test_incomplete_request_gets_408_after_handshake_ms(env):
    expect_error(env["port"], b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n",
                 408)


def test_silent_client_gets_408_after_handshake_ms(env):
    expect_error(env["port"], b"", 408)


# ---- §3.2 routing ------------------------------------------------------------

def test_no_matching_route_gets_404(env):
    req, _ = upgrade_request("/", "unknown.test")
    expect_error(env["port"], req, 404)


@pytest.mark.parametrize("host,path,expected", [
    ("chat.example.com", "/ws", "pool-chat"),
    ("chat.example.com", "/ws/room/1?x=1", "pool-chat"),
    ("CHAT.Example.COM:8443", "/ws", "pool-chat"),          # case-insensitive, port ignored
    ("chat.example.com", "/other", None),                    # prefix does not match: no route
    ("a.example.org", "/anything", "pool-org"),
    ("A.EXAMPLE.ORG:80", "/", "pool-org"),
    ("deep.a.example.org", "/", "pool-org"),
    ("a.example.org", "/api", "pool-org"),                   # first match wins
    ("elsewhere.test", "/api/v1", "pool-api"),               # no host = any host
    ("elsewhere.test", "/api?q=1", "pool-api"),
    ("127.0.0.1", "/echo/x", "pool-echo"),
], ids=lambda v: str(v))
def test_routing_by_host_and_path(env, host, path, expected):
    if expected is None:
        req, _ = upgrade_request(path, host)
        expect_error(env["port"], req, 404)
    else:
        assert whoami_raw(env["port"], path, host) == expected


def test_wildcard_does_not_match_the_bare_suffix(env):
    # "*.example.org" is a sub-domain pattern (as in nginx server_name).
    req, _ = upgrade_request("/", "example.org")
    expect_error(env["port"], req, 404)


# ---- §3.3 upgrade checks ----------------------------------------------------

def _req(env, **kw):
    return upgrade_request(kw.pop("path", "/"), f"127.0.0.1:{env['port']}", **kw)[0]


@pytest.mark.parametrize("kw", [
    dict(method="POST"),
    dict(version="HTTP/1.0"),
    dict(headers={"Connection": "keep-alive"}),
    dict(headers={"Connection": "close"}),
    dict(omit=("Connection",)),
    dict(omit=("Sec-WebSocket-Key",)),
    dict(headers={"Sec-WebSocket-Key": "AAAAAAAAAAAAAAAAAAAA"}),        # 15 bytes
    dict(headers={"Sec-WebSocket-Key": "not base64 at all!!!!!=="}),
    dict(headers={"Sec-WebSocket-Key": "AAAAAAAAAAAAAAAAAAAAAAAAAAAA"}),  # 21 bytes
], ids=["post", "http10", "conn-keepalive", "conn-close", "no-connection",
        "no-key", "key-15-bytes", "key-not-base64", "key-21-bytes"])
def test_invalid_upgrade_gets_400(env, kw):
    expect_error(env["port"], _req(env, **kw), 400)


def test_version_other_than_13_gets_426_with_version_13(env):
    for v in ("12", "8", "14"):
        headers, _ = expect_error(env["port"],
                                  _req(env, headers={"Sec-WebSocket-Version": v}), 426)
        assert headers.get("sec-websocket-version") == "13", headers


def test_plain_request_on_a_websocket_only_route_gets_426(env):
    data = f"GET /wsonly HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()
    headers, _ = expect_error(env["port"], data, 426)
    assert headers.get("sec-websocket-version") == "13", headers


def test_upgrade_on_an_http_only_route_gets_404(env):
    req, _ = upgrade_request("/httponly", "127.0.0.1")
    expect_error(env["port"], req, 404)


@pytest.mark.parametrize("headers", [
    {"Connection": "keep-alive, Upgrade"},
    {"Connection": "UPGRADE"},
    {"Connection": "foo,upgrade , bar"},
    {"Upgrade": "WebSocket"},
], ids=["conn-list", "conn-upper", "conn-spaces", "upgrade-mixed-case"])
def test_valid_upgrade_variants_get_101(env, headers):
    c = connect(env["port"])
    try:
        req, key = upgrade_request("/echo", f"127.0.0.1:{env['port']}", headers=headers)
        c.send(req)
        st, h, raw = c.read_http_head()
        assert st == 101, raw
        assert h["sec-websocket-accept"] == accept_for(key)
    finally:
        c.close()


# ---- §3.4 forwarded headers ---------------------------------------------------

def test_forwarded_headers_added_and_others_unchanged(env):
    t = tag()
    host = f"127.0.0.1:{env['port']}"
    key = new_key()
    sent = [("X-Forwarded-For", "203.0.113.7"), ("X-Custom", "Keep  Me, as-is"),
            ("Sec-WebSocket-Protocol", "p1, p2"),
            ("Sec-WebSocket-Extensions", "x-test; a=1"),
            ("Cookie", "a=1; session=xyz"), ("User-Agent", "e2e/1.0")]
    c = connect(env["port"])
    try:
        req, _ = upgrade_request(f"/some/path?id={t}&x=1", host, key=key, headers=sent)
        c.send(req)
        st, h, raw = c.read_http_head()
        assert st == 101, raw
        rec = env["fake"].wait_conn(t)
    finally:
        c.close()
    hd = rec.headers
    assert rec.request_line == f"GET /some/path?id={t}&x=1 HTTP/1.1"
    assert hd["x-forwarded-for"] == "203.0.113.7, 127.0.0.1", hd
    assert hd["x-forwarded-proto"] == "http", hd
    assert hd["x-forwarded-host"] == host, hd
    assert hd["x-real-ip"] == "127.0.0.1", hd
    assert hd["host"] == host, hd
    assert hd["x-custom"] == "Keep  Me, as-is", hd
    assert hd["sec-websocket-protocol"] == "p1, p2", hd
    assert hd["sec-websocket-extensions"] == "x-test; a=1", hd
    assert hd["cookie"] == "a=1; session=xyz", hd
    assert hd["user-agent"] == "e2e/1.0", hd
    assert hd["sec-websocket-key"] == key, hd
    assert hd["sec-websocket-version"] == "13", hd


def test_forwarded_for_created_when_absent(env):
    async def body():
        async with wsc(env["port"], "/echo") as ws:
            await ws.send("headers")
            return json.loads(await ws.recv())
    hd = run(body())
    assert hd["x-forwarded-for"] == "127.0.0.1", hd
    assert hd["x-real-ip"] == "127.0.0.1", hd
    assert hd["x-forwarded-proto"] == "http", hd
    assert hd["x-forwarded-host"] == f"127.0.0.1:{env['port']}", hd


def test_subprotocol_and_extensions_negotiated_end_to_end(env):
    payload = "compress me " * 10000

    async def body():
        async with wsc(env["port"], "/subproto", subprotocols=["chat.v1", "chat.v2"],
                       compression="deflate") as ws:
            assert ws.subprotocol == "chat.v2"
            assert [type(x).__name__ for x in ws.extensions] == ["PerMessageDeflate"]
            await ws.send(payload)
            assert await ws.recv() == payload
            await ws.send(b"\x00\x01" * 5000)
            assert await ws.recv() == b"\x00\x01" * 5000
    run(body())
    path, headers = env["wslib"].requests[-1]
    assert path == "/subproto"
    assert headers["sec-websocket-protocol"] == "chat.v1, chat.v2"
    assert headers["sec-websocket-extensions"].startswith("permessage-deflate")


# ---- §3.5 retries, 502, 503 -----------------------------------------------------

def _which(env, key, pool_name):
    r = subprocess.run([WSGATE_BIN, "--which", key, "-p", pool_name, "-c",
                        env["gate"].cfg_path], capture_output=True, text=True, timeout=20)
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_refused_backend_is_retried_on_the_next_one(env):
    dead = env["dead"][0]
    keys = [f"k{i}" for i in range(30)]
    to_dead = [k for k in keys if dead in _which(env, k, "retry")]
    assert to_dead, "no key maps to the refusing backend"
    for k in to_dead[:4] + [k for k in keys if k not in to_dead][:2]:
        assert whoami_raw(env["port"], f"/retry?user={k}", "127.0.0.1") == "pool-retry"


def test_connect_timeout_is_retried_on_the_next_backend(env):
    hole = env["blackhole"].address
    keys = [k for k in (f"s{i}" for i in range(30)) if hole in _which(env, k, "slow")]
    assert keys, "no key maps to the unresponsive backend"
    for k in keys[:2]:
        assert whoami_raw(env["port"], f"/slow?user={k}", "127.0.0.1") == "pool-retry"


def test_all_backends_refusing_gets_502(env):
    req = _req(env, path="/allrefused?user=x")
    expect_error(env["port"], req, 502)


def test_no_healthy_backend_gets_503(env):
    # retries 0 and passive checks only: each request is one failed connect;
    # after `fall` (default 3) of them the only backend is down.
    seen = []
    for _ in range(6):
        c = connect(env["port"])
        try:
            c.send(_req(env, path="/to503"))
            st, h, body, raw = c.read_response()
            assert "close" in h.get("connection", "").lower(), raw
        finally:
            c.close()
        seen.append(st)
        if st == 503:
            break
    assert seen[0] == 502, seen
    assert seen[-1] == 503, seen
    assert set(seen[:-1]) == {502}, seen


# ---- §3.6 the backend's answer ------------------------------------------------

def test_101_relayed_as_sent(env):
    t = tag()
    c = connect(env["port"])
    try:
        req, key = upgrade_request(f"/?mode=hdr101&id={t}", f"127.0.0.1:{env['port']}")
        c.send(req)
        st, h, raw = c.read_http_head()
        expected = ("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                    f"Connection: Upgrade\r\nSec-WebSocket-Accept: {accept_for(key)}\r\n"
                    "X-Backend-Extra: yes\r\n\r\n").encode()
        assert raw == expected
        c.send_frame(OP_TEXT, "foo")
        assert c.read_message() == (OP_TEXT, b"bar")
    finally:
        c.close()


def test_101_with_wrong_accept_gets_502(env):
    t = tag()
    expect_error(env["port"], _req(env, path=f"/?mode=badaccept&id={t}"), 502)
    rec = env["fake"].wait_conn(t)
    assert rec.eof.wait(5), "backend connection not closed"


def test_non_101_answer_relayed_with_body_then_closed(env):
    t = tag()
    c = connect(env["port"])
    try:
        c.send(_req(env, path=f"/?mode=403&id={t}"))
        data = c.read_to_eof(timeout=5)
    finally:
        c.close()
    assert data == (b"HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\n"
                    b"X-Backend: fake\r\nContent-Length: 10\r\n\r\nforbidden\n"), data
    assert env["fake"].wait_conn(t).eof.wait(5), "backend connection not closed"


# ---- §3.7 early frames ----------------------------------------------------------

@pytest.mark.parametrize("path", ["/?id=early", "/echo"], ids=["fake", "echo"])
def test_frames_sent_with_the_request_are_not_lost(env, path):
    early = (encode_frame(OP_TEXT, "early-1") + encode_frame(OP_TEXT, "early-2") +
             encode_frame(OP_TEXT, "x" * 3000))
    c, _ = ws_connect(env["port"], path, early=early)
    try:
        assert c.read_message() == (OP_TEXT, b"early-1")
        assert c.read_message() == (OP_TEXT, b"early-2")
        assert c.read_message() == (OP_TEXT, b"x" * 3000)
    finally:
        c.close()
