"""The C echo backend (bench/echo_backend.c) on its own: the other tests and
the benchmarks trust it, so its contract is checked here directly."""

import json
import os
import signal
import subprocess

import pytest

from conftest import ECHO_BIN, can_connect, free_port, run, wait_for, wsc
from wsg_raw import (OP_BINARY, OP_CLOSE, OP_CONT, OP_PING, OP_PONG, OP_TEXT, close_payload,
                     connect, encode_frame, http_exchange, upgrade_request, ws_connect)


@pytest.fixture(scope="module")
def echo(mstack):
    return mstack.echo("solo")


def test_default_name_is_echo_port():
    proc = subprocess.Popen([ECHO_BIN, "--port", "0"], stdout=subprocess.PIPE)
    try:
        line = proc.stdout.readline().decode().strip()
        assert line.startswith("listening 127.0.0.1:"), line
        port = int(line.rsplit(":", 1)[1])

        async def body():
            async with wsc(port) as ws:
                await ws.send("whoami")
                return await ws.recv()
        assert run(body()) == f"echo-{port}"
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
        proc.stdout.close()


def test_usage_errors(tmp_path):
    for args in (["--port"], ["--bogus", "1"], ["--port", "x"], []):
        r = subprocess.run([ECHO_BIN, *args], capture_output=True, timeout=10)
        assert r.returncode == 2, args


def test_busy_port_fails_clearly(echo):
    r = subprocess.run([ECHO_BIN, "--port", str(echo.port)], capture_output=True, text=True,
                       timeout=10)
    assert r.returncode == 1
    assert f"127.0.0.1:{echo.port}" in r.stderr and "in use" in r.stderr, r.stderr


def test_healthz_without_upgrade(echo):
    st, h, body, raw = http_exchange(echo.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (st, body) == (200, b"ok")


def test_whoami_headers_request(echo):
    async def body():
        async with wsc(echo.port, "/p?q=1", extra_headers={
                "X-Forwarded-For": "1.2.3.4", "X-Real-IP": "1.2.3.4",
                "X-Forwarded-Proto": "http", "X-Forwarded-Host": "h.test"}) as ws:
            await ws.send("whoami")
            name = await ws.recv()
            await ws.send("headers")
            hd = json.loads(await ws.recv())
            await ws.send("request")
            return name, hd, await ws.recv()
    name, hd, req = run(body())
    assert name == "solo"
    assert hd["x-forwarded-for"] == "1.2.3.4" and hd["x-real-ip"] == "1.2.3.4"
    assert hd["x-forwarded-proto"] == "http" and hd["x-forwarded-host"] == "h.test"
    assert hd["upgrade"] == "websocket"
    assert req == "GET /p?q=1 HTTP/1.1"


def test_echo_sizes_and_16_mib_streaming(echo):
    async def body():
        async with wsc(echo.port) as ws:
            for n in (0, 1, 125, 126, 65535, 65536, 1 << 20, 16 << 20):
                d = os.urandom(n)
                await ws.send(d)
                assert await ws.recv() == d, n
            await ws.send(["fr", "ag", "ments"])
            assert await ws.recv() == "fragments"
    run(body(), timeout=60)


def test_frames_echoed_frame_by_frame_unmasked_with_ping_and_close(echo):
    c, _ = ws_connect(echo.port, early=encode_frame(OP_TEXT, "hi"))
    try:
        assert c.read_message() == (OP_TEXT, b"hi")
        c.send(encode_frame(OP_BINARY, b"a", fin=False) + encode_frame(OP_PING, b"pp") +
               encode_frame(OP_CONT, b"b" * 70000, fin=True))
        frames = [c.read_frame() for _ in range(3)]
        assert [(f.opcode, f.fin, len(f.payload), f.masked) for f in frames] == [
            (OP_BINARY, False, 1, False), (OP_PONG, True, 2, False), (OP_CONT, True, 70000, False)]
        # A header split over several writes, then a close.
        frame = encode_frame(OP_TEXT, "split" * 30)
        for i in range(len(frame)):
            c.send(frame[i:i + 1])
        assert c.read_message() == (OP_TEXT, b"split" * 30)
        c.send_frame(OP_CLOSE, close_payload(4005, "done"))
        f = c.read_frame()
        assert (f.opcode, f.close_code, f.close_reason) == (OP_CLOSE, 4005, "done")
        c.wait_closed(5)
    finally:
        c.close()


def test_bad_requests(echo):
    # "/" is the demo page now (test_demo.py); /chat is the WebSocket endpoint.
    st, *_ = http_exchange(echo.port, b"GET /chat HTTP/1.1\r\nHost: x\r\n\r\n")
    assert st == 426
    req, _ = upgrade_request("/", "x", headers={"Sec-WebSocket-Key": "short"})
    st, *_ = http_exchange(echo.port, req)
    assert st == 400
    c = connect(echo.port)
    try:
        c.send(b"GET / HTTP/1.1\r\nX: " + b"a" * 20000)
        st, *_ = c.read_response()
        assert st == 431
    finally:
        c.close()


def test_reserved_opcode_gets_1002(echo):
    c, _ = ws_connect(echo.port)
    try:
        c.send_frame(0x3, b"x")
        f = c.read_frame()
        assert (f.opcode, f.close_code) == (OP_CLOSE, 1002)
    finally:
        c.close()


def test_many_connections_and_abrupt_disconnects(echo):
    conns = []
    try:
        for i in range(200):
            c, _ = ws_connect(echo.port)
            conns.append(c)
        for i, c in enumerate(conns):
            if i % 3 == 0:
                c.send(encode_frame(OP_BINARY, b"x" * 1000)[:500])  # cut mid-frame
                c.close()
            elif i % 3 == 1:
                c.send(b"\x82")  # cut mid-header
                c.close()
        for c in conns[2::3]:
            c.send_frame(OP_TEXT, "alive")
            assert c.read_message() == (OP_TEXT, b"alive")
    finally:
        for c in conns:
            c.close()


# ---- the floor relays (bench/floor_relay.c, bench/floor_uring.c) --------------
# bench/compare divides every proxy's cost by theirs, so they must relay
# faithfully: every byte both ways, the close handshake, the TCP end.

FLOORS = [os.path.join(os.path.dirname(ECHO_BIN), name)
          for name in ("floor_relay", "floor_uring")]


@pytest.mark.parametrize("floor", FLOORS, ids=os.path.basename)
def test_floor_relay_is_transparent(echo, floor):
    if not os.access(floor, os.X_OK):
        pytest.skip(f"{floor} not built (floor_uring needs liburing)")
    port = free_port()
    proc = subprocess.Popen([floor, "--port", str(port), "--backend-port", str(echo.port)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        line = proc.stdout.readline().decode().strip()
        if proc.poll() == 3:
            pytest.skip("io_uring unavailable here: " + proc.stderr.read().decode())
        assert line == f"listening on {port}", line
        wait_for(lambda: can_connect(port), 5, what="the floor listening")

        async def body():
            async with wsc(port) as ws:
                await ws.send("whoami")
                name = await ws.recv()
                big = bytes(range(256)) * 1024  # 256 KiB: several reads and sends
                await ws.send(big)
                back = await ws.recv()
                await ws.close(4001, "bye")
                return name, back == big, ws.close_code
        assert run(body()) == ("solo", True, 4001)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
        proc.stdout.close()
        proc.stderr.close()


def test_floor_relay_usage_errors():
    floor = FLOORS[0]
    for args in ([], ["--port", "1"], ["--port", "x", "--backend-port", "2"],
                 ["--port", "1", "--backend-port", "2", "--backend-host", "nohost"]):
        r = subprocess.run([floor, *args], capture_output=True, timeout=10)
        assert r.returncode == 2, args
