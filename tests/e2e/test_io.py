"""The "io" setting (docs/io.md): each method is the one /status names and
the start-up log line says, and relays both ways; a large message crosses
whole on either. On io_uring /metrics carries the rings' counters
(wsgate_io_uring_*, docs/metrics.md), which move with the traffic; on epoll
they are absent. The rest of the suite runs on both through e2e-uring."""
import os

import pytest

from conftest import free_port, make_config, pool, wait_for
from opshelpers import scrape, status
from wsg_raw import OP_BINARY, OP_TEXT, ws_connect

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


def test_uring_stash_is_a_gauge_of_what_stalled_readers_hold(stack):
    """Backends that flood clients which do not read: once limits.buffer_bytes
    is queued for a client, wsgate stops reading its backend side, and what a
    receive brought in past that point waits in the side's stash (the relay
    takes only what it may still queue out of the last 16 KiB receive).
    Several connections, so that one whose last receive happened to fit
    exactly cannot make the stash 0. Once the clients read, the stash is
    handed over and the gauge is back to 0."""
    fake = stack.fake("io-stash")
    _, port, aport = uring_gate(stack, fake, workers=1, limits={"buffer_bytes": 65536})
    quiet_ring(aport)
    k, per, frame = 4, 8 << 20, 65536
    conns = []
    try:
        for i in range(k):
            c, _ = ws_connect(port, f"/?id=stash-{i}", rcvbuf=16384)
            conns.append(c)
            fake.wait_conn(f"stash-{i}")
        for c in conns:
            c.send_frame(OP_TEXT, f"stream:{per}:{frame}")
        m = wait_for(lambda: (lambda m: m if m.value("wsgate_io_uring_stashed_bytes") > 0
                              else None)(scrape(aport)), 20,
                     interval=0.05, what="bytes stashed for stalled backend sides")
        assert m.value("wsgate_io_uring_sides") == 2 * k
        # At most what the floods sent and the clients have not read.
        assert m.value("wsgate_io_uring_stashed_bytes") < k * per
        for c in conns:
            c.settimeout(60)
            got = 0
            while got < per:
                f = c.read_frame()
                assert f.opcode == OP_BINARY, f
                got += len(f.payload)
            assert got == per
        # Every byte reached its client, so nothing is left in a stash.
        assert scrape(aport).value("wsgate_io_uring_stashed_bytes") == 0
    finally:
        for c in conns:
            c.close()
    quiet_ring(aport)


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
