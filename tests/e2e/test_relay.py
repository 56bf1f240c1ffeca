"""SPEC §4: the relay: frames pass unchanged, protocol errors, close rules.

One wsgate for the module: /echo goes to the C echo backend, everything else
to the recording python fake (its behaviour chosen by ?mode=, its records
found by ?id=). max_frame_bytes is 2 MiB so that 1 MiB messages pass and a
3 MiB frame is too long. Heartbeats are off here (test_timeouts.py has them).
"""

import asyncio
import os
import socket
import struct
import uuid

import pytest

from conftest import free_port, make_config, pool, run, wait_for, wsc
from wsg_raw import (OP_BINARY, OP_CLOSE, OP_CONT, OP_PING, OP_PONG, OP_TEXT,
                     close_payload, encode_frame, ws_connect)

MAX_FRAME = 2 << 20
DRAIN_MS = 1000


@pytest.fixture(scope="module")
def env(mstack):
    fake = mstack.fake("relay-fake")
    echo = mstack.echo("relay-echo")
    port = free_port()
    cfg = make_config(port, {"main": pool([fake.address]), "echo": pool([echo.address])},
                      routes=[{"path_prefix": "/echo", "pool": "echo"},
                              {"path_prefix": "/", "pool": "main"}],
                      timeouts={"drain_ms": DRAIN_MS},
                      heartbeat={"interval_ms": 0},
                      limits={"max_frame_bytes": MAX_FRAME})
    gate = mstack.gate(cfg)
    return {"port": port, "fake": fake, "echo": echo, "gate": gate}


def tag():
    return uuid.uuid4().hex[:12]


def fake_conn(env, mode="echo", **kw):
    """A raw client connected through wsgate to the fake; returns (conn, record)."""
    t = tag()
    c, _ = ws_connect(env["port"], f"/?mode={mode}&id={t}", **kw)
    return c, env["fake"].wait_conn(t)


def read_close(c, timeout=5.0):
    """Reads frames until a close frame; returns it (data frames are skipped)."""
    c.settimeout(timeout)
    while True:
        f = c.read_frame()
        if f.opcode == OP_CLOSE:
            return f


def assert_closed(c, timeout=DRAIN_MS / 1000 + 4):
    try:
        c.wait_closed(timeout)
    except socket.timeout:
        raise AssertionError("wsgate kept the client connection open")


# ---- data passes unchanged -------------------------------------------------------

def test_foo_bar_round_trip(env):
    async def body():
        async with wsc(env["port"], f"/?id={tag()}") as ws:
            await ws.send("foo")
            assert await ws.recv() == "bar"
    run(body())


SIZES = [0, 125, 126, 65535, 65536, 48 * 1024, 1 << 20]


@pytest.mark.parametrize("size", SIZES)
def test_message_sizes_round_trip(env, size):
    text = "".join(chr(0x61 + i % 26) for i in range(size))
    data = os.urandom(size)

    async def body():
        async with wsc(env["port"], "/echo") as ws:
            await ws.send(text)
            assert await ws.recv() == text
            await ws.send(data)
            got = await ws.recv()
            assert isinstance(got, bytes) and got == data
    run(body())


def test_message_sizes_through_python_backend(env):
    async def body():
        async with wsc(env["port"], f"/?id={tag()}") as ws:
            for size in SIZES:
                data = os.urandom(size)
                await ws.send(data)
                assert await ws.recv() == data
    run(body())


def test_interleaved_big_and_small_messages(env):
    msgs = []
    for i in range(12):
        msgs.append(os.urandom([1 << 20, 48 * 1024, 65536, 200000][i % 4]))
        msgs.append(f"small-{i}")
        msgs.append(b"")

    async def body():
        async with wsc(env["port"], "/echo") as ws:
            async def sender():
                for m in msgs:
                    await ws.send(m)
            task = asyncio.ensure_future(sender())
            for m in msgs:
                assert await ws.recv() == m
            await task
    run(body())


def test_many_concurrent_connections(env):
    async def one(i):
        async with wsc(env["port"], "/echo") as ws:
            for j in range(3):
                await ws.send(f"{i}-{j}")
                assert await ws.recv() == f"{i}-{j}"

    async def body():
        await asyncio.gather(*(one(i) for i in range(100)))
    run(body())


def test_fragmented_message_passes_frame_by_frame_with_masks(env):
    c, rec = fake_conn(env)
    keys = [b"\x01\x02\x03\x04", b"\xaa\xbb\xcc\xdd", b"\x10\x20\x30\x40"]
    try:
        c.send(encode_frame(OP_TEXT, "ab", fin=False, mask_key=keys[0]) +
               encode_frame(OP_CONT, "cd", fin=False, mask_key=keys[1]) +
               encode_frame(OP_CONT, "ef", fin=True, mask_key=keys[2]))
        got = [c.read_frame() for _ in range(3)]
        assert [(f.opcode, f.fin, f.payload) for f in got] == [
            (OP_TEXT, False, b"ab"), (OP_CONT, False, b"cd"), (OP_CONT, True, b"ef")]
        assert not any(f.masked for f in got)
        rec.wait_frame(lambda f: f.opcode == OP_CONT and f.fin)
        seen = rec.frames[:3]
        assert [(f.opcode, f.fin, f.payload, f.mask_key) for f in seen] == [
            (OP_TEXT, False, b"ab", keys[0]), (OP_CONT, False, b"cd", keys[1]),
            (OP_CONT, True, b"ef", keys[2])]
    finally:
        c.close()


def test_fragmented_message_with_websockets_client(env):
    async def body():
        async with wsc(env["port"], "/echo") as ws:
            await ws.send(["ab", "cd", "ef"])
            assert await ws.recv() == "abcdef"
            await ws.send([b"\x00" * 70000, b"\x01" * 10, b"\x02" * 66000])
            assert await ws.recv() == b"\x00" * 70000 + b"\x01" * 10 + b"\x02" * 66000
    run(body())


def test_control_frame_between_fragments_passes(env):
    c, rec = fake_conn(env)
    try:
        c.send(encode_frame(OP_BINARY, b"12", fin=False) + encode_frame(OP_PING, b"mid") +
               encode_frame(OP_CONT, b"34", fin=True))
        got = [c.read_frame() for _ in range(3)]
        assert sorted((f.opcode, f.payload) for f in got) == sorted(
            [(OP_BINARY, b"12"), (OP_PONG, b"mid"), (OP_CONT, b"34")])
    finally:
        c.close()


def test_rsv1_passes_when_permessage_deflate_was_negotiated(env):
    t = tag()
    c, _ = ws_connect(env["port"], f"/?id={t}&ext=permessage-deflate")
    rec = env["fake"].wait_conn(t)
    try:
        c.send_frame(OP_BINARY, b"rsv", rsv=4)
        f = c.read_frame()
        assert (f.opcode, f.rsv, f.payload) == (OP_BINARY, 4, b"rsv")
        assert rec.wait_frame(lambda f: f.opcode == OP_BINARY).rsv == 4
    finally:
        c.close()


def test_client_ping_reaches_backend_and_pong_comes_back(env):
    t = tag()

    async def body():
        async with wsc(env["port"], f"/?id={t}") as ws:
            pong = await ws.ping(b"abc")
            await asyncio.wait_for(pong, 5)
    run(body())
    f = env["fake"].wait_conn(t).wait_frame(lambda f: f.opcode == OP_PING, what="the ping")
    assert f.payload == b"abc" and f.masked


def test_backend_ping_reaches_client_and_pong_goes_back(env):
    c, rec = fake_conn(env)
    try:
        c.send_frame(OP_TEXT, "ping:hello")
        f = c.read_frame()
        assert (f.opcode, f.payload, f.masked) == (OP_PING, b"hello", False)
        c.send_frame(OP_PONG, b"hello")
        g = rec.wait_frame(lambda f: f.opcode == OP_PONG, what="the client's pong")
        assert g.payload == b"hello" and g.masked
    finally:
        c.close()


# ---- protocol errors ---------------------------------------------------------

def _expect_protocol_close(env, frame_bytes, code, mode="echo"):
    c, rec = fake_conn(env, mode)
    try:
        c.send(frame_bytes)
        f = read_close(c)
        assert f.close_code == code, f
        assert not f.masked
        g = rec.wait_close()
        assert g.close_code == code and g.masked, g
        assert_closed(c)
        assert rec.eof.wait(DRAIN_MS / 1000 + 4), "backend connection not closed"
    finally:
        c.close()


def test_unmasked_client_frame_gets_1002(env):
    _expect_protocol_close(env, encode_frame(OP_TEXT, "hello", mask=False), 1002)


@pytest.mark.parametrize("opcode", [0x3, 0x7, 0xB, 0xF])
def test_reserved_opcode_gets_1002(env, opcode):
    _expect_protocol_close(env, encode_frame(opcode, b"x"), 1002)


def test_control_frame_longer_than_125_gets_1002(env):
    _expect_protocol_close(env, encode_frame(OP_PING, b"p" * 126), 1002)


def test_fragmented_control_frame_gets_1002(env):
    _expect_protocol_close(env, encode_frame(OP_PING, b"p", fin=False), 1002)


def test_frame_longer_than_max_frame_bytes_gets_1009(env):
    # Only the header and a little payload: wsgate must decide on the header.
    head = encode_frame(OP_BINARY, b"z" * 100, length=MAX_FRAME + 1)
    _expect_protocol_close(env, head, 1009)


def test_frame_of_exactly_max_frame_bytes_passes(env):
    data = os.urandom(MAX_FRAME)

    async def body():
        async with wsc(env["port"], "/echo") as ws:
            await ws.send(data)
            assert await ws.recv() == data
    run(body())


def test_masked_frame_from_backend_gets_1002(env):
    c, rec = fake_conn(env)
    try:
        c.send_frame(OP_TEXT, "masked")
        f = read_close(c)
        assert f.close_code == 1002, f
        assert rec.wait_close().close_code == 1002
        assert_closed(c)
    finally:
        c.close()


def test_backend_frame_longer_than_max_frame_bytes_gets_1009(env):
    c, rec = fake_conn(env)
    try:
        c.send_frame(OP_TEXT, f"big:{MAX_FRAME + 1}")
        f = read_close(c)
        assert f.close_code == 1009, f
        assert rec.wait_close().close_code == 1009
        assert_closed(c)
    finally:
        c.close()


# ---- close ------------------------------------------------------------------------

def test_client_close_passes_through_and_both_tcp_connections_close(env):
    c, rec = fake_conn(env)
    try:
        c.send_frame(OP_CLOSE, close_payload(4000, "bye"))
        g = rec.wait_close()
        assert (g.close_code, g.close_reason, g.masked) == (4000, "bye", True)
        f = read_close(c)
        assert (f.close_code, f.close_reason, f.masked) == (4000, "bye", False)
        assert_closed(c)
        assert rec.eof.wait(5), "backend connection not closed"
    finally:
        c.close()


def tcp_states(port_a, port_b):
    """The TCP states (hex, as /proc/net/tcp gives them) of loopback sockets
    whose local port is <port_a> and remote port <port_b>."""
    out = []
    for path in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(path) as f:
                lines = f.read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, remote, state = fields[1], fields[2], fields[3]
            if (int(local.rsplit(":", 1)[1], 16) == port_a and
                    int(remote.rsplit(":", 1)[1], 16) == port_b):
                out.append(state)
    return out


TIME_WAIT = "06"


def test_close_leaves_time_wait_with_the_backend_not_wsgate(env):
    """RFC 6455 §7.1.1: the server closes the TCP connection first. Towards
    the backend wsgate is the client, so it waits for the backend's FIN and
    the TIME_WAIT lands on the backend's socket, not on one of wsgate's
    ephemeral ports to that backend."""
    c, rec = fake_conn(env)
    theirs, ours = env["fake"].port, rec.peer[1]
    try:
        c.send_frame(OP_CLOSE, close_payload(1000))
        assert read_close(c).close_code == 1000
        assert_closed(c)
        wait_for(lambda: TIME_WAIT in tcp_states(theirs, ours), 5,
                 what="the backend's socket in TIME_WAIT")
        assert TIME_WAIT not in tcp_states(ours, theirs)
    finally:
        c.close()


def test_backend_that_never_ends_tcp_after_close_is_closed_soon(stack):
    """A backend that answers the close frame but waits for wsgate to end
    the TCP connection is not held for drain_ms (30 s here) once the client
    is gone: about a second."""
    fake = stack.fake("linger")
    port = free_port()
    stack.gate(make_config(port, {"main": pool([fake.address])},
                           timeouts={"drain_ms": 30000}, heartbeat={"interval_ms": 0}))
    t = tag()
    c, _ = ws_connect(port, f"/?mode=linger&id={t}")
    rec = fake.wait_conn(t)
    try:
        c.send_frame(OP_CLOSE, close_payload(1000))
        assert read_close(c).close_code == 1000
        assert_closed(c, 5)
        assert rec.eof.wait(5), "wsgate held the backend connection for drain_ms"
    finally:
        c.close()


def test_close_with_websockets_client_keeps_code_and_reason(env):
    async def body():
        ws = await wsc(env["port"], "/echo")
        await ws.send("x")
        assert await ws.recv() == "x"
        await ws.close(4321, "see you")
        return ws.close_code, ws.close_reason
    assert run(body()) == (4321, "see you")


def test_unanswered_close_ends_both_connections_after_drain_ms(env):
    c, rec = fake_conn(env, "noclose")
    try:
        c.send_frame(OP_CLOSE, close_payload(1000))
        assert rec.wait_close().close_code == 1000
        took = c.wait_closed(DRAIN_MS / 1000 + 4)
        assert took < DRAIN_MS / 1000 + 4
        assert rec.eof.wait(5), "backend connection not closed"
    finally:
        c.close()


def test_backend_tcp_end_without_close_frame_gives_client_1011(env):
    c, rec = fake_conn(env)
    try:
        c.send_frame(OP_TEXT, "die")
        f = read_close(c)
        assert f.close_code == 1011, f
        assert_closed(c)
    finally:
        c.close()


def test_client_disappearing_gives_backend_1001(env):
    c, rec = fake_conn(env)
    c.send_frame(OP_TEXT, "foo")
    assert c.read_message() == (OP_TEXT, b"bar")
    c.sock.close()
    g = rec.wait_close()
    assert g.close_code == 1001 and g.masked, g
    assert rec.eof.wait(DRAIN_MS / 1000 + 4), "backend connection not closed"


def test_client_reset_gives_backend_1001(env):
    c, rec = fake_conn(env)
    c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    c.sock.close()  # RST
    assert rec.wait_close().close_code == 1001
