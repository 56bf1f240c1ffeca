"""SPEC §4 backpressure and memory: at most buffer_bytes wait per direction,
wsgate stops reading a sender whose receiver does not drain, memory per
connection is bounded and an idle connection holds no read buffers.

Memory is wsgate's VmRSS. Under ASan the freed-memory quarantine is made
small for these processes so that it does not count as growth.
"""

import threading
import time
import uuid

import pytest

from conftest import SMALL_QUARANTINE, free_port, make_config, pool, rss_kb, wait_for
from wsg_fakes import pattern
from wsg_raw import OP_BINARY, OP_CLOSE, OP_TEXT, close_payload, encode_frame, ws_connect

MiB = 1 << 20
TOTAL = 200 * MiB        # offered by the sender
FRAME = 64 * 1024
RSS_BOUND_KB = 32 * 1024  # growth allowed while the receiver does not read


def tag():
    return uuid.uuid4().hex[:12]


@pytest.fixture
def env(stack):
    fake = stack.fake("bp-fake")
    echo = stack.echo("bp-echo")
    port = free_port()
    cfg = make_config(port, {"main": pool([fake.address]), "echo": pool([echo.address])},
                      routes=[{"path_prefix": "/echo", "pool": "echo"},
                              {"path_prefix": "/", "pool": "main"}],
                      heartbeat={"interval_ms": 0},
                      limits={"buffer_bytes": 65536})
    gate = stack.gate(cfg, env=SMALL_QUARANTINE)
    return {"port": port, "fake": fake, "gate": gate}


def wait_stalled(progress, what, stable_s=0.5, timeout=20.0, sample=None):
    """Waits until progress() stops changing for <stable_s>; calls sample()
    on every poll. Returns the final value."""
    last, since = progress(), time.monotonic()
    deadline = time.monotonic() + timeout
    while True:
        time.sleep(0.05)
        if sample:
            sample()
        v = progress()
        if v != last:
            last, since = v, time.monotonic()
        elif time.monotonic() - since >= stable_s:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} never stalled (at {v} bytes)")


def test_backend_to_client_backpressure_bounds_memory_and_data_resumes(env):
    pid = env["gate"].pid
    t = tag()
    c, _ = ws_connect(env["port"], f"/?id={t}", rcvbuf=16384)
    rec = env["fake"].wait_conn(t)
    try:
        base = rss_kb(pid)
        peak = [base]
        c.send_frame(OP_TEXT, f"stream:{TOTAL}:{FRAME}")
        stalled_at = wait_stalled(lambda: rec.sent_bytes, "the backend's stream",
                                  sample=lambda: peak.__setitem__(0, max(peak[0], rss_kb(pid))))
        growth = peak[0] - base
        assert stalled_at < TOTAL, "wsgate absorbed everything the backend offered"
        assert growth < RSS_BOUND_KB, f"wsgate RSS grew by {growth} KiB"

        # The client reads now: every frame arrives intact and in order.
        c.settimeout(30)
        got = 0
        i = 0
        while got < TOTAL:
            f = c.read_frame()
            assert f.opcode == OP_BINARY, f
            assert f.payload == pattern(i, len(f.payload)), f"frame {i} corrupted"
            got += len(f.payload)
            i += 1
        assert got == TOTAL
        assert rec.sent_bytes == TOTAL
    finally:
        c.close()


def test_client_to_backend_backpressure_bounds_memory_and_data_resumes(env):
    pid = env["gate"].pid
    t = tag()
    c, _ = ws_connect(env["port"], f"/?mode=sink&id={t}")
    rec = env["fake"].wait_conn(t)
    sent = [0]
    err = []

    def sender():
        try:
            zero = b"\0\0\0\0"  # a zero mask keeps the payload as is: cheap to send
            i = 0
            while sent[0] < TOTAL:
                n = min(FRAME, TOTAL - sent[0])
                c.sock.sendall(encode_frame(OP_BINARY, pattern(i, n), mask_key=zero))
                sent[0] += n
                i += 1
        except Exception as e:  # reported by the test thread
            err.append(e)

    c.settimeout(60)
    th = threading.Thread(target=sender, daemon=True)
    try:
        base = rss_kb(pid)
        peak = [base]
        th.start()
        stalled_at = wait_stalled(lambda: sent[0], "the client's upload",
                                  sample=lambda: peak.__setitem__(0, max(peak[0], rss_kb(pid))))
        growth = peak[0] - base
        assert not err, err
        assert stalled_at < TOTAL, "wsgate absorbed everything the client offered"
        assert growth < RSS_BOUND_KB, f"wsgate RSS grew by {growth} KiB"

        rec.resume.set()
        th.join(60)
        assert not th.is_alive() and not err, err
        wait_for(lambda: rec.sink_bytes >= TOTAL, 60, what="the backend to read everything")
        assert rec.sink_bytes == TOTAL
        assert rec.sink_ok, "payload corrupted on the way"
        c.send_frame(OP_CLOSE, close_payload(1000))
        f = c.read_frame()
        assert f.opcode == OP_CLOSE and f.close_code == 1000, f
    finally:
        rec.resume.set()
        c.close()
        th.join(10)


def test_idle_connections_hold_no_read_buffers(env):
    pid = env["gate"].pid
    conns = []
    try:
        # Warm up the allocator and the echo path first.
        for _ in range(20):
            c, _ = ws_connect(env["port"], "/echo")
            c.send_frame(OP_TEXT, "warm")
            assert c.read_message() == (OP_TEXT, b"warm")
            conns.append(c)
        base = rss_kb(pid)
        n = 300
        for _ in range(n):
            c, _ = ws_connect(env["port"], "/echo")
            c.send_frame(OP_TEXT, "x" * 1000)
            assert c.read_message() == (OP_TEXT, b"x" * 1000)
            conns.append(c)
        growth = rss_kb(pid) - base
        # Holding a 64 KiB read buffer per idle connection would be ~19 MiB.
        assert growth < n * 24, f"{n} idle connections grew wsgate's RSS by {growth} KiB"
        # They all still work.
        for c in conns[::37]:
            c.send_frame(OP_TEXT, "still")
            assert c.read_message() == (OP_TEXT, b"still")
    finally:
        for c in conns:
            c.close()


def test_slow_http_client_downloading_64_mib_keeps_memory_bounded(stack):
    """SPEC §9: a response streams with at most buffer_bytes waiting for a
    client that does not read; wsgate never holds the whole download."""
    fake = stack.http("bp-http")
    port = free_port()
    cfg = make_config(port, {"web": pool([fake.address])}, heartbeat={"interval_ms": 0},
                      limits={"buffer_bytes": 65536},
                      timeouts={"response_idle_ms": 60000})
    gate = stack.gate(cfg, env=SMALL_QUARANTINE)
    pid = gate.pid
    import socket as _s
    # A small receive buffer, set before the connect (set after it, the
    # window it announces stalls the transfer in zero-window probes).
    c = _s.socket(_s.AF_INET, _s.SOCK_STREAM)
    c.setsockopt(_s.SOL_SOCKET, _s.SO_RCVBUF, 16384)
    c.settimeout(30)
    c.connect(("127.0.0.1", port))
    try:
        base = rss_kb(pid)
        peak = [base]
        c.sendall(b"GET /big?mb=64 HTTP/1.1\r\nHost: x\r\n\r\n")
        stalled_at = wait_stalled(lambda: fake.big_sent, "the download",
                                  sample=lambda: peak.__setitem__(0, max(peak[0], rss_kb(pid))))
        growth = peak[0] - base
        assert stalled_at < 64 * MiB, "wsgate absorbed the whole download"
        assert growth < RSS_BOUND_KB, f"wsgate RSS grew by {growth} KiB"
        # The client reads now: every byte arrives, in order.
        buf = b""
        while b"\r\n\r\n" not in buf:
            buf += c.recv(65536)
        head, body = buf.split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.1 200") and b"Content-Length: 67108864" in head, head
        got, block, pos = len(body), 0, 0
        pending = body
        while True:
            while len(pending) >= MiB:
                assert pending[:MiB] == pattern(block, MiB), f"block {block} corrupted"
                pending = pending[MiB:]
                block += 1
            if got == 64 * MiB:
                break
            chunk = c.recv(1 << 20)
            assert chunk, f"closed after {got} bytes"
            got += len(chunk)
            pending += chunk
        assert block == 64 and pending == b""
    finally:
        c.close()
