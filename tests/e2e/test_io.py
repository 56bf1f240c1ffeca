"""The "io" setting (docs/io.md): each method is the one /status names and
the start-up log line says, and relays both ways; a large message crosses
whole on either. On io_uring /metrics carries the rings' counters
(wsgate_io_uring_*, docs/metrics.md), which move with the traffic; on epoll
they are absent. The rest of the suite runs on both through e2e-uring."""
import os
import time

import pytest

from conftest import free_port, make_config, pool, wait_for
from opshelpers import scrape, status
from wsg_fakes import pattern
from wsg_raw import OP_BINARY, OP_TEXT, encode_frame, ws_connect

URING_COUNTERS = ("wsgate_io_uring_submits_total", "wsgate_io_uring_completions_total",
                  "wsgate_io_uring_enobufs_total")
URING_GAUGES = ("wsgate_io_uring_workers", "wsgate_io_uring_sides",
                "wsgate_io_uring_recv_buffers", "wsgate_io_uring_stashed_bytes")


def uring_usable():
    """What wsgate's probe will say, as far as a test can see it: the sysctl.
    A seccomp refusal shows in the log instead (checked below)."""
    try:
        with open("/proc/sys/kernel/io_uring_disabled") as f:
            return f.read().strip() == "0"
    except OSError:
        return True


@pytest.mark.parametrize("io", ["epoll", "uring", "auto"])
def test_io_is_reported_and_relays(stack, io):
    echo = stack.echo(f"io-{io}")
    port, aport = free_port(), free_port()
    cfg = make_config(port, {"p": pool([echo.address])}, io=io,
                      admin={"bind": f"127.0.0.1:{aport}"}, heartbeat={"interval_ms": 0})
    g = stack.gate(cfg)
    log = g.log()
    if io == "uring" and '"io": "uring" is unavailable' in log:
        assert "io: epoll" in log
        expect = "epoll"
    else:
        expect = "uring" if io == "uring" else "epoll"
        assert f"io: {expect} (" in log, log
    if io == "uring" and uring_usable():
        assert expect == "uring", log
    assert status(aport)["io"] == expect
    c, _ = ws_connect(port, "/?user=io")
    try:
        for i in range(20):
            c.send_frame(OP_TEXT, f"m{i}")
            assert c.read_message() == (OP_TEXT, f"m{i}".encode())
        big = os.urandom(3 << 20)  # several buffers of the ring, several sends
        c.send_frame(OP_BINARY, big)
        assert c.read_message() == (OP_BINARY, big)
    finally:
        c.close()
    wait_for(lambda: status(aport)["connections"]["active"] == 0, 5,
             what="the connection gone from /status")


def uring_gate(stack, backend, workers=2, **sections):
    """A wsgate on io_uring with an admin endpoint, or a skip saying why it
    could not run there."""
    port, aport = free_port(), free_port()
    cfg = make_config(port, {"p": pool([backend.address])}, workers=workers, io="uring",
                      admin={"bind": f"127.0.0.1:{aport}"}, heartbeat={"interval_ms": 0},
                      **sections)
    g = stack.gate(cfg)
    log = g.log()
    if '"io": "uring" is unavailable' in log:
        pytest.skip("io_uring unavailable here: " +
                    next(ln for ln in log.splitlines() if "is unavailable" in ln))
    io = status(aport)["io"]
    if io != "uring":
        pytest.skip(f"wsgate runs on {io}: a worker could not set up its ring\n{log}")
    return g, port, aport


def quiet_ring(aport):
    """The readiness probe's connection gone from the rings: a scrape with
    no side on them."""
    return wait_for(lambda: (lambda m: m if m.value("wsgate_io_uring_sides") == 0 else None)(
        scrape(aport)), 5, what="no side on the rings")


def test_uring_counters_are_on_metrics_and_move_with_traffic(stack):
    echo = stack.echo("io-metrics")
    _, port, aport = uring_gate(stack, echo)
    m0 = quiet_ring(aport)
    for name in URING_COUNTERS:
        assert m0.types[name] == "counter", name
        assert name in m0.help, name
    for name in URING_GAUGES:
        assert m0.types[name] == "gauge", name
        assert name in m0.help, name
    assert m0.value("wsgate_io_uring_workers") == 2
    # Summed over the two workers, each of whose buffer rings starts with 16.
    assert m0.value("wsgate_io_uring_recv_buffers") >= 32
    assert m0.value("wsgate_io_uring_stashed_bytes") == 0

    c, _ = ws_connect(port, "/?user=io-metrics")
    try:
        for i in range(50):
            c.send_frame(OP_TEXT, f"m{i}")
            assert c.read_message() == (OP_TEXT, f"m{i}".encode())
        m1 = scrape(aport)
        # The client's side and the backend's, both plain TCP: on the ring.
        assert m1.value("wsgate_io_uring_sides") == 2
        # 50 echoes: at least a receive completion for each message each way.
        done = m1.value("wsgate_io_uring_completions_total") - \
            m0.value("wsgate_io_uring_completions_total")
        assert done >= 100, done
        assert m1.value("wsgate_io_uring_submits_total") > \
            m0.value("wsgate_io_uring_submits_total")
    finally:
        c.close()
    m2 = quiet_ring(aport)
    for name in URING_COUNTERS:
        assert m2.value(name) >= m1.value(name), name
    assert m2.value("wsgate_io_uring_stashed_bytes") == 0


def unread_at_gate(port, client):
    """Bytes of <client>'s connection that wsgate's socket has received and
    not read yet (rx_queue of /proc/net/tcp: rcv_nxt - copied_seq), or None
    if the socket is not listed."""
    local = "0100007F:%04X" % port
    remote = "0100007F:%04X" % client.sock.getsockname()[1]
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            fields = line.split()
            if fields[1] == local and fields[2] == remote:
                return int(fields[4].split(":")[1], 16)
    return None


def test_uring_stash_is_a_gauge_of_what_stalled_readers_hold(stack):
    """The stash holds what a receive brought in past the point where the
    relay stopped reading the side. A backend flooding a client that does
    not read stashes only by chance (where buffer_bytes is reached depends
    on how much of a send the kernel took); here the relay stops at a byte
    fixed by the code: limits.client_bytes_per_s R = 4096 (window: R bytes,
    1 s) and limits.buffer_bytes L = 12288, clients of a sink backend.

    1. M1, an 8192-byte frame, is all wsgate reads of the client in the
       relay: each read gets at most min(WSG_CHUNK_DATA, L) = L bytes.
       Charged 2 s against the 1 s window, wsg__edge_client_read stops
       reading the client until 1000 ms after the charge (>= t0 + 1 s); no
       receive stays armed (single-shot: on_recv arms one only while
       reading).
    2. The client sends 16384 bytes more; the test sees exactly those
       unread in wsgate's socket (/proc/net/tcp) before t0 + 0.9 s, so the
       receive armed when reading resumes completes with a whole 16 KiB
       provided buffer (BR_SIZE). Had M1 been read late, or more than M1,
       that check fails: the test never passes on other premises.
    3. The sink took M1, so the backend's queue is empty and the relay's
       alloc offers L = 12288 bytes (a 16 KiB pool chunk holds
       WSG_CHUNK_DATA = 16384 - its header > L). deliver() hands them over,
       their charge (3 s) passes the window whenever it is made, reading
       stops inside deliver(), and on_recv stashes the other 4096 bytes.
       Nothing is read for the next 2 to 3 s: the gauge is 4096 per
       connection, 8192 for two (their holds end less than 0.9 s apart),
       which a gauge stuck at 0, or one counting whole receives or one
       side only, never shows.
    4. The next read hands the stash over: the backend gets every byte in
       order, and the read after it sees the client's EOF, so the sides
       close; a gauge not decremented then still says 8192 and fails.
    """
    fake = stack.fake("io-stash")
    rate, limit = 4096, 12288
    _, port, aport = uring_gate(stack, fake, workers=1,
                                limits={"client_bytes_per_s": rate, "buffer_bytes": limit})
    quiet_ring(aport)
    k, wire, buf = 2, 8192, 16384
    plen = wire - 8  # 2 + 2 bytes of header, a 4-byte mask
    stash = buf - limit
    conns, recs = [], []
    try:
        for i in range(k):
            c, _ = ws_connect(port, f"/?id=stash-{i}&mode=sink")
            conns.append(c)
            rec = fake.wait_conn(f"stash-{i}")
            rec.resume.set()
            recs.append(rec)
        t0 = time.monotonic()
        for c in conns:
            m1 = encode_frame(OP_BINARY, pattern(0, plen))
            assert len(m1) == wire
            c.send(m1)
        wait_for(lambda: all(r.sink_bytes == plen for r in recs), 5,
                 interval=0.005, what="M1 at the backend")
        for c in conns:
            c.send(encode_frame(OP_BINARY, pattern(1, plen)) +
                   encode_frame(OP_BINARY, pattern(2, plen)))
        wait_for(lambda: all(unread_at_gate(port, c) == buf for c in conns), 5,
                 interval=0.005, what=f"{buf} bytes unread in wsgate's sockets")
        seen = time.monotonic() - t0
        assert seen < 0.9, f"the blobs were queued {seen:.3f} s after M1: the " \
            "1 s hold may have ended first, and the argument does not hold"
        last = {}

        def stashed():
            m = scrape(aport)
            last["v"] = m.value("wsgate_io_uring_stashed_bytes")
            return m if last["v"] == k * stash else None
        try:
            m = wait_for(stashed, 10, interval=0.05, what="the stashes")
        except AssertionError:
            raise AssertionError(f"wsgate_io_uring_stashed_bytes {last.get('v')}, "
                                 f"expected {k} x {stash}") from None
        assert m.value("wsgate_io_uring_sides") == 2 * k
    finally:
        for c in conns:
            c.close()
    # Handed over: the backend has every byte, in order, and once the
    # clients' ends are read the sides are gone; nothing stays stashed.
    wait_for(lambda: all(r.sink_bytes == 3 * plen for r in recs), 15, interval=0.05,
             what="the stashed bytes at the backend")
    assert all(r.sink_ok for r in recs)
    m = wait_for(lambda: (lambda m: m if m.value("wsgate_io_uring_sides") == 0 else None)(
        scrape(aport)), 15, interval=0.05, what="no side on the rings")
    assert m.value("wsgate_io_uring_stashed_bytes") == 0


def test_uring_metrics_are_absent_on_epoll(stack):
    echo = stack.echo("io-epoll-metrics")
    port, aport = free_port(), free_port()
    cfg = make_config(port, {"p": pool([echo.address])}, io="epoll",
                      admin={"bind": f"127.0.0.1:{aport}"}, heartbeat={"interval_ms": 0})
    stack.gate(cfg)
    c, _ = ws_connect(port, "/?user=io-epoll")
    try:
        c.send_frame(OP_TEXT, "x")
        assert c.read_message() == (OP_TEXT, b"x")
        m = scrape(aport)
    finally:
        c.close()
    assert status(aport)["io"] == "epoll"
    assert "wsgate_connections_total" in m.types
    assert not [n for n in m.names() | set(m.types) if n.startswith("wsgate_io_uring")]
