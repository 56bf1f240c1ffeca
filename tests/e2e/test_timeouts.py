"""SPEC §4: heartbeats and the idle timeout.

Two wsgates: one with a 200 ms heartbeat (300 ms timeout) and no idle
timeout, one with a 500 ms idle timeout and no heartbeat.
"""

import asyncio
import socket
import time
import uuid

import pytest

from conftest import free_port, make_config, pool, run, wsc
from wsg_raw import OP_CLOSE, OP_PING, OP_PONG, OP_TEXT, ws_connect

HB_INTERVAL_MS = 200
HB_TIMEOUT_MS = 300
IDLE_MS = 500
SLACK = 3.0


def tag():
    return uuid.uuid4().hex[:12]


@pytest.fixture(scope="module")
def hb(mstack):
    fake = mstack.fake("hb-fake")
    echo = mstack.echo("hb-echo")
    port = free_port()
    cfg = make_config(port, {"main": pool([fake.address]), "echo": pool([echo.address])},
                      routes=[{"path_prefix": "/echo", "pool": "echo"},
                              {"path_prefix": "/", "pool": "main"}],
                      heartbeat={"interval_ms": HB_INTERVAL_MS, "timeout_ms": HB_TIMEOUT_MS},
                      timeouts={"idle_ms": 0})
    return {"port": port, "fake": fake, "gate": mstack.gate(cfg)}


@pytest.fixture(scope="module")
def idle(mstack):
    fake = mstack.fake("idle-fake")
    port = free_port()
    cfg = make_config(port, {"main": pool([fake.address])},
                      heartbeat={"interval_ms": 0}, timeouts={"idle_ms": IDLE_MS})
    return {"port": port, "fake": fake, "gate": mstack.gate(cfg)}


def fake_conn(env, mode="echo"):
    t = tag()
    c, _ = ws_connect(env["port"], f"/?mode={mode}&id={t}")
    return c, env["fake"].wait_conn(t)


# ---- heartbeat ------------------------------------------------------------------

def test_silent_client_gets_a_ping_then_is_closed_as_dead(hb):
    c, rec = fake_conn(hb)
    try:
        c.settimeout(HB_INTERVAL_MS / 1000 + SLACK)
        f = c.read_frame()
        assert f.opcode == OP_PING, f
        assert not f.masked, "pings to the client are unmasked"
        assert f.payload, "wsgate's ping carries a payload that marks it as its own"
        # No answer: dead after timeout_ms; the backend gets 1001, both close.
        g = rec.wait_close(timeout=HB_TIMEOUT_MS / 1000 + SLACK)
        assert g.close_code == 1001, g
        c.wait_closed(SLACK)
        assert rec.eof.wait(SLACK), "backend connection not closed"
    finally:
        c.close()


def test_client_answering_pings_stays_and_its_pongs_are_consumed(hb):
    c, rec = fake_conn(hb)
    pings = []
    try:
        c.settimeout(0.1)
        end = time.monotonic() + 5 * HB_INTERVAL_MS / 1000 + HB_TIMEOUT_MS / 1000
        while time.monotonic() < end:
            try:
                f = c.read_frame()
            except socket.timeout:
                continue
            assert f.opcode == OP_PING, f"unexpected frame {f!r}"
            pings.append(f.payload)
            c.send_frame(OP_PONG, f.payload)
        assert len(pings) >= 2, pings
        c.settimeout(5)
        c.send_frame(OP_TEXT, "foo")
        while True:
            f = c.read_frame()
            if f.opcode == OP_PING:
                c.send_frame(OP_PONG, f.payload)
                continue
            assert (f.opcode, f.payload) == (OP_TEXT, b"bar"), f
            break
        ops = rec.opcodes()
        assert OP_PONG not in ops, f"wsgate forwarded a pong to the backend: {rec.frames}"
        assert OP_CLOSE not in ops, rec.frames
    finally:
        c.close()


def test_backend_gets_masked_wsgate_pings_and_its_pongs_are_consumed(hb):
    c, rec = fake_conn(hb)
    try:
        f = rec.wait_frame(lambda f: f.opcode == OP_PING, HB_INTERVAL_MS / 1000 + SLACK,
                           "a ping from wsgate")
        assert f.masked and f.payload, f
        # The client answers wsgate's pings; it must never see the backend's
        # pongs to wsgate's pings.
        c.settimeout(0.1)
        end = time.monotonic() + 3 * HB_INTERVAL_MS / 1000
        while time.monotonic() < end:
            try:
                g = c.read_frame()
            except socket.timeout:
                continue
            assert g.opcode == OP_PING, f"client got {g!r}"
            c.send_frame(OP_PONG, g.payload)
    finally:
        c.close()


def test_endpoint_ping_passes_untouched_with_heartbeat_on(hb):
    c, rec = fake_conn(hb)
    try:
        c.send_frame(OP_PING, b"mine")
        c.settimeout(5)
        while True:
            f = c.read_frame()
            if f.opcode == OP_PING:
                c.send_frame(OP_PONG, f.payload)
                continue
            assert (f.opcode, f.payload) == (OP_PONG, b"mine"), f
            break
        g = rec.wait_frame(lambda f: f.opcode == OP_PING and f.payload == b"mine")
        assert g.masked
    finally:
        c.close()


def test_busy_raw_client_sees_no_ping(hb):
    c, rec = fake_conn(hb)
    try:
        c.settimeout(5)
        for i in range(10):
            c.send_frame(OP_TEXT, f"m{i}")
            f = c.read_frame()
            assert (f.opcode, f.payload) == (OP_TEXT, f"m{i}".encode()), f
            time.sleep(HB_INTERVAL_MS / 4000)
    finally:
        c.close()


def test_dead_backend_gives_client_1001(hb):
    # mode=sink reads nothing: the backend never answers wsgate's ping.
    c, rec = fake_conn(hb, "sink")
    try:
        c.settimeout(HB_INTERVAL_MS / 1000 + HB_TIMEOUT_MS / 1000 + SLACK)
        while True:
            f = c.read_frame()
            if f.opcode == OP_PING:
                c.send_frame(OP_PONG, f.payload)
                continue
            assert f.opcode == OP_CLOSE, f
            assert f.close_code == 1001, f
            break
        c.wait_closed(SLACK)
    finally:
        rec.resume.set()
        c.close()


# ---- idle -----------------------------------------------------------------------

def test_idle_connection_closed_with_1001_idle_timeout(idle):
    t = tag()

    async def body():
        async with wsc(idle["port"], f"/?id={t}") as ws:
            await asyncio.wait_for(ws.wait_closed(), IDLE_MS / 1000 + SLACK)
            return ws.close_code, ws.close_reason
    assert run(body()) == (1001, "idle timeout")
    g = idle["fake"].wait_conn(t).wait_close()
    assert (g.close_code, g.close_reason) == (1001, "idle timeout")


def test_data_frames_keep_a_connection_alive(idle):
    async def body():
        async with wsc(idle["port"], f"/?id={tag()}") as ws:
            end = time.monotonic() + 3 * IDLE_MS / 1000
            while time.monotonic() < end:
                await ws.send("tick")
                assert await ws.recv() == "tick"
                await asyncio.sleep(IDLE_MS / 4000)
            assert ws.open
            await asyncio.wait_for(ws.wait_closed(), IDLE_MS / 1000 + SLACK)
            return ws.close_code
    assert run(body()) == 1001


def test_backend_data_alone_keeps_a_connection_alive(idle):
    # "either direction": after one command frame only the backend sends data.
    c, rec = fake_conn(idle)
    n = 12
    try:
        c.settimeout(5)
        c.send_frame(OP_TEXT, f"tick:{n}:{IDLE_MS // 4}")
        for i in range(n):
            f = c.read_frame()
            assert (f.opcode, f.payload) == (OP_TEXT, f"tick-{i}".encode()), f
        f = c.read_frame()
        assert f.opcode == OP_CLOSE and f.close_code == 1001, f
    finally:
        c.close()


def test_pings_do_not_count_as_data(idle):
    async def body():
        async with wsc(idle["port"], f"/?id={tag()}") as ws:
            t0 = time.monotonic()
            while ws.open and time.monotonic() - t0 < IDLE_MS / 1000 + SLACK:
                try:
                    pong = await ws.ping()
                    await asyncio.wait_for(pong, 1)
                except Exception:
                    break
                await asyncio.sleep(IDLE_MS / 5000)
            await asyncio.wait_for(ws.wait_closed(), SLACK)
            return ws.close_code, ws.close_reason
    assert run(body()) == (1001, "idle timeout")


# ---- max lifetime (SPEC §12) ---------------------------------------------------------

LIFETIME_MS = 400


def test_max_lifetime_closes_with_1001_within_its_jitter(stack):
    fake = stack.fake("life-fake")
    port = free_port()
    stack.gate(make_config(port, {"main": pool([fake.address])}, heartbeat={"interval_ms": 0},
                           timeouts={"max_lifetime_ms": LIFETIME_MS, "idle_ms": 0}))
    conns = []
    for _ in range(4):
        t0 = time.monotonic()
        c, rec = fake_conn({"port": port, "fake": fake})
        conns.append((t0, c, rec))
    try:
        for t0, c, rec in conns:
            c.settimeout(LIFETIME_MS / 1000 + SLACK)
            while True:
                f = c.read_frame()  # data would be echoes; there are none
                if f.opcode == OP_CLOSE:
                    break
            took = time.monotonic() - t0
            assert (f.close_code, f.close_reason) == (1001, "max lifetime")
            # not before max_lifetime_ms, and not much after its 10 % jitter
            assert LIFETIME_MS / 1000 <= took < LIFETIME_MS * 1.1 / 1000 + SLACK, took
            assert rec.wait_close().close_code == 1001
    finally:
        for _, c, _ in conns:
            c.close()
