"""SPEC §6 seen through the admin endpoint: active health checks change a
backend's state in /status within interval x fall (+ slack), move only its
keys while it is down and bring them back after `rise` passes; /status
names why a check failed; the checks speak the protocol as SPEC §6 says
(Host header, websocket handshake, masked ping, close 1000).

(tests/e2e/test_health.py covers the checks through traffic and the log.)
"""

import pytest

from conftest import dead_port, free_port, make_config, pool, wait_for
from opshelpers import backend, landing, status, wait_state
from wsg_raw import OP_CLOSE, OP_PING

USERS = [f"user-{i}" for i in range(24)]
SLACK = 2.0  # seconds on top of interval x fall for scheduling and polling


def test_stopped_backend_goes_down_its_keys_move_and_come_back_after_rise(stack):
    echos = [stack.echo(f"hc{i}") for i in range(3)]
    interval, fall, rise = 200, 3, 2
    port, aport = free_port(), free_port()
    cfg = make_config(port, {"p": pool([e.address for e in echos],
                                       health={"type": "websocket", "path": "/health",
                                               "interval_ms": interval, "timeout_ms": 500,
                                               "fall": fall, "rise": rise})},
                      workers=2, admin={"bind": f"127.0.0.1:{aport}"},
                      heartbeat={"interval_ms": 0})
    stack.gate(cfg)
    wait_for(lambda: all(b["last_check"] and b["last_check"]["ok"]
                         for b in status(aport)["pools"]["p"]["backends"]), 5,
             what="every backend checked and up")
    home = landing(port, USERS)
    counts = {e.name: list(home.values()).count(e.name) for e in echos}
    victim = max(echos, key=lambda e: counts[e.name])
    assert 0 < counts[victim.name] < len(USERS), counts

    victim.stop()
    took, b = wait_state(aport, "p", victim.address, "down", interval * fall / 1000 + SLACK)
    assert "refused" in b["last_check"]["error"], b
    assert b["last_check"]["ok"] is False
    assert b["failures"] >= fall
    for e in echos:
        if e is not victim:
            assert backend(aport, "p", e.address)["state"] == "up"

    moved = landing(port, USERS)
    for u in USERS:
        if home[u] == victim.name:
            assert moved[u] != victim.name
        else:
            assert moved[u] == home[u], (u, home[u], moved[u])  # other keys stay

    back = stack.echo(victim.name, victim.port)
    took, b = wait_state(aport, "p", back.address, "up", interval * rise / 1000 + SLACK)
    assert b["last_check"]["ok"] is True and b["last_check"]["error"] is None
    assert landing(port, USERS) == home  # its own keys return, only those


def test_status_names_why_checks_fail(stack):
    fake = stack.fake("hc-fake")
    dead = f"127.0.0.1:{dead_port()}"
    fast = {"interval_ms": 150, "timeout_ms": 300, "rise": 1, "fall": 1}
    pools = {
        "ws_ok": pool([fake.address], health=dict(fast, type="websocket", path="/h")),
        "ws_accept": pool([fake.address],
                          health=dict(fast, type="websocket", path="/h?mode=badaccept")),
        "ws_403": pool([fake.address], health=dict(fast, type="websocket", path="/h?mode=403")),
        "ws_silent": pool([fake.address],
                          health=dict(fast, type="websocket", path="/h?mode=silent")),
        "ws_nopong": pool([fake.address],
                          health=dict(fast, type="websocket", path="/h?mode=sink")),
        "http_ok": pool([fake.address], health=dict(fast, type="http", path="/h")),
        "http_403": pool([fake.address], health=dict(fast, type="http", path="/h?mode=403")),
        "tcp_dead": pool([dead], health=dict(fast, type="tcp")),
        "tcp_ok": pool([fake.address], health=dict(fast, type="tcp")),
    }
    routes = [{"path_prefix": f"/{name}", "pool": name} for name in pools]
    port, aport = free_port(), free_port()
    stack.gate(make_config(port, pools, routes=routes, admin={"bind": f"127.0.0.1:{aport}"},
                           heartbeat={"interval_ms": 0}))
    expect = {
        "ws_ok": ("up", None),
        "http_ok": ("up", None),
        "tcp_ok": ("up", None),
        "ws_accept": ("down", "wrong Sec-WebSocket-Accept"),
        "ws_403": ("down", "status 403"),
        "http_403": ("down", "status 403"),
        "ws_silent": ("down", "timeout after 300 ms"),
        "ws_nopong": ("down", "no pong"),
        "tcp_dead": ("down", "connection refused"),
    }

    def all_checked():
        j = status(aport)["pools"]
        return j if all(j[p]["backends"][0]["last_check"] for p in expect) else None
    j = wait_for(all_checked, 5, what="a check of every pool")
    for name, (state, why) in expect.items():
        b = j[name]["backends"][0]
        assert j[name]["health"] == name.split("_")[0].replace("ws", "websocket")
        if why is None:
            assert (b["state"], b["last_check"]["ok"]) == ("up", True), (name, b)
        else:
            assert b["state"] == state, (name, b)
            assert why in b["last_check"]["error"], (name, b)


def test_checks_speak_the_protocol(stack):
    fake = stack.fake("hc-wire")
    fast = {"interval_ms": 200, "timeout_ms": 500, "rise": 1, "fall": 1}
    pools = {
        "w": pool([fake.address], health=dict(fast, type="websocket", path="/wsh?id=ws-check")),
        "h": pool([fake.address], health=dict(fast, type="http", path="/hh?id=http-check")),
    }
    port = free_port()
    stack.gate(make_config(port, pools, routes=[{"path_prefix": "/", "pool": "w"}],
                           heartbeat={"interval_ms": 0}))

    ws = fake.wait_conn("ws-check")
    assert ws.request_line == "GET /wsh?id=ws-check HTTP/1.1"
    assert ws.headers["host"] == fake.address
    assert ws.headers["upgrade"].lower() == "websocket"
    assert ws.headers["sec-websocket-version"] == "13"
    ping = ws.wait_frame(lambda f: f.opcode == OP_PING, what="the check's ping")
    assert ping.masked and len(ping.payload) > 0
    close = ws.wait_close()
    assert close.masked and close.close_code == 1000
    assert ws.opcodes().index(OP_PING) < ws.opcodes().index(OP_CLOSE)
    ws.eof.wait(5)
    assert ws.eof.is_set(), "the check did not end its connection"

    http = fake.wait_conn("http-check")
    assert http.request_line == "GET /hh?id=http-check HTTP/1.1"
    assert http.headers["host"] == fake.address
    assert "upgrade" not in http.headers


@pytest.mark.parametrize("htype", ["tcp", "http", "websocket"])
def test_a_hanging_backend_does_not_stall_checks_of_others(stack, htype):
    """A backend that accepts and never answers is bounded by timeout_ms;
    the other backends' checks and the proxy keep going."""
    fake = stack.fake("hang")
    echo = stack.echo(f"fine-{htype}")
    hang = fake.address if htype != "tcp" else f"127.0.0.1:{free_port()}"
    health = {"type": htype, "path": "/healthz?mode=silent", "interval_ms": 150, "timeout_ms": 300,
              "rise": 1, "fall": 2}
    port, aport = free_port(), free_port()
    stack.gate(make_config(port, {"p": pool([hang, echo.address], health=health)},
                           admin={"bind": f"127.0.0.1:{aport}"}, heartbeat={"interval_ms": 0}))
    wait_state(aport, "p", hang, "down", 0.45 * 2 + SLACK)
    b = backend(aport, "p", echo.address)
    assert b["state"] == "up" and b["last_check"]["ok"] is True
    assert set(landing(port, USERS[:6]).values()) == {echo.name}
