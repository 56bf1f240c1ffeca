"""SPEC §8 shutdown (and §1 signals): SIGTERM/SIGINT stop accepting, /healthz
answers 503, every client gets close 1001 "going away", wsgate waits up to
drain_ms and exits 0; a second signal exits at once."""

import asyncio
import signal
import socket
import time

import pytest

from conftest import free_port, make_config, pool, run, wait_for, wsc
from wsg_raw import OP_CLOSE, OP_PING, OP_PONG, close_payload, connect, ws_connect

DRAIN_MS = 1500
SLACK = 4.0


def start(stack, drain_ms=DRAIN_MS, admin=False):
    echo = stack.echo("sd-echo")
    port = free_port()
    extra = {}
    if admin:
        extra["admin"] = {"bind": f"127.0.0.1:{free_port()}"}
    cfg = make_config(port, {"p": pool([echo.address])}, timeouts={"drain_ms": drain_ms},
                      heartbeat={"interval_ms": 0}, **extra)
    return stack.gate(cfg)


def refused(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return False
    except ConnectionRefusedError:
        return True


def read_close(c):
    while True:
        f = c.read_frame()
        if f.opcode == OP_PING:
            c.send_frame(OP_PONG, f.payload)
        elif f.opcode == OP_CLOSE:
            return f


def http_get(port, path):
    c = connect(port)
    try:
        c.send(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        st, h, body, raw = c.read_response()
        return st, body
    finally:
        c.close()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["TERM", "INT"])
def test_signal_closes_every_client_with_1001_and_exits_0(stack, sig):
    g = start(stack)

    async def body():
        clients = [await wsc(g.port, f"/?user=u{i}") for i in range(5)]
        for ws in clients:
            await ws.send("ping")
            assert await ws.recv() == "ping"
        t0 = time.monotonic()
        g.signal(sig)
        for ws in clients:
            await asyncio.wait_for(ws.wait_closed(), DRAIN_MS / 1000 + SLACK)
            assert (ws.close_code, ws.close_reason) == (1001, "going away")
        return time.monotonic() - t0
    run(body())
    rc = g.wait(DRAIN_MS / 1000 + SLACK)
    assert rc == 0, (rc, g.log()[-2000:])


def test_shutdown_refuses_new_connections(stack):
    g = start(stack, drain_ms=4000)
    # A raw client that never answers the close keeps the drain going.
    c, _ = ws_connect(g.port, "/?user=holder")
    try:
        g.signal(signal.SIGTERM)
        f = read_close(c)
        assert (f.close_code, f.close_reason) == (1001, "going away")
        assert g.alive
        wait_for(lambda: refused(g.port), 2, what="the listener to refuse connections")
    finally:
        c.close()
    rc = g.wait(4 + SLACK)
    assert rc == 0, g.log()[-2000:]


def test_healthz_answers_503_draining_during_shutdown(stack):
    g = start(stack, drain_ms=4000, admin=True)
    admin = int(g.cfg["admin"]["bind"].rsplit(":", 1)[1])
    st, body = http_get(admin, "/healthz")
    assert (st, body.strip()) == (200, b"ok"), (st, body)
    c, _ = ws_connect(g.port, "/?user=holder")
    try:
        g.signal(signal.SIGTERM)
        assert read_close(c).close_code == 1001
        st, body = http_get(admin, "/healthz")
        assert st == 503 and body.strip() == b"draining", (st, body)
    finally:
        c.close()
    rc = g.wait(4 + SLACK)
    assert rc == 0, g.log()[-2000:]


def test_exits_0_within_drain_ms_when_a_client_does_not_answer(stack):
    g = start(stack, drain_ms=DRAIN_MS)
    c, _ = ws_connect(g.port, "/?user=stubborn")
    try:
        t0 = time.monotonic()
        g.signal(signal.SIGTERM)
        f = read_close(c)
        assert f.close_code == 1001
        rc = g.wait(DRAIN_MS / 1000 + SLACK)
        assert rc == 0, (rc, g.log()[-2000:])
        assert time.monotonic() - t0 < DRAIN_MS / 1000 + SLACK
        c.wait_closed(2)
    finally:
        c.close()


def test_exits_quickly_when_clients_answer_the_close(stack):
    g = start(stack, drain_ms=20000)
    c, _ = ws_connect(g.port, "/?user=polite")
    try:
        t0 = time.monotonic()
        g.signal(signal.SIGTERM)
        f = read_close(c)
        assert f.close_code == 1001
        c.send_frame(OP_CLOSE, close_payload(1001))
        rc = g.wait(SLACK)
        assert rc == 0, (rc, g.log()[-2000:])
        assert time.monotonic() - t0 < SLACK
    finally:
        c.close()


def test_second_sigterm_exits_at_once(stack):
    g = start(stack, drain_ms=30000)
    c, _ = ws_connect(g.port, "/?user=stubborn")
    try:
        g.signal(signal.SIGTERM)
        f = read_close(c)
        assert f.close_code == 1001
        assert g.wait(0.3) is None, "exited before the drain"
        t0 = time.monotonic()
        g.signal(signal.SIGTERM)
        rc = g.wait(SLACK)
        assert rc is not None, "second SIGTERM did not stop wsgate"
        assert rc >= 0, f"killed by signal {-rc}"
        assert time.monotonic() - t0 < SLACK
    finally:
        c.close()


def test_idle_gate_exits_0_on_sigterm(stack):
    g = start(stack)
    g.signal(signal.SIGTERM)
    assert g.wait(SLACK) == 0, g.log()[-2000:]


def test_echo_backend_exits_cleanly_on_sigterm(stack):
    e = stack.echo("sd-echo-only")
    async def body():
        async with wsc(e.port, "/") as ws:
            await ws.send("whoami")
            assert await ws.recv() == "sd-echo-only"
            e.signal(signal.SIGTERM)
            await asyncio.wait_for(ws.wait_closed(), SLACK)
    run(body())
    assert e.wait(SLACK) == 0
